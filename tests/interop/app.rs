//! The application both implementations run in `tests/interop.rs`: its topics and state
//! dirs, a Kafka Streams instance or kstate worker started on it, and what the broker says
//! about its group (committed offsets, the described topology and task ownership).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kstate::protocol::{BrokerConnection, ConnectionConfig, DescribedGroup, DescribedTopology};

use crate::common;
use crate::common::java::JavaApp;
use crate::common::worker::{compacted, produce, read_topic, Click, Worker};

pub const PARTITIONS: i32 = 4;
pub const STORE: &str = "counts";
pub const GAP: i64 = 10_000;
pub const GRACE: i64 = 20_000;
/// Sessions outlive the test on both sides: the reference model has no expiry.
pub const RETENTION: i64 = 3_600_000;
/// JVM start, joining the group, restoring and processing one half, on a shared machine.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub type View = BTreeMap<(String, i64, i64), i64>;

/// Which implementation runs a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Java,
    Kstate,
}

/// The processing guarantee both sides run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once_v2",
        }
    }

    pub fn read_committed(self) -> bool {
        self == Guarantee::ExactlyOnce
    }
}

/// One application: its id, topics and a state dir per instance (removed when dropped).
pub struct App {
    pub bootstrap: String,
    pub id: String,
    pub input: String,
    pub output: String,
    pub state: PathBuf,
}

impl App {
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        let bootstrap = common::broker();
        let id = common::unique(name);
        let input = format!("{id}-clicks");
        let output = format!("{id}-counts");
        common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
        common::create_topic(&bootstrap, &output, PARTITIONS, &[]).await?;
        let state = std::env::temp_dir().join(&id);
        Ok(Self {
            bootstrap,
            id,
            input,
            output,
            state,
        })
    }

    /// A fresh state dir for one instance.
    pub fn state_dir(&self, instance: &str) -> PathBuf {
        self.state.join(instance)
    }

    pub fn java(&self, instance: &str, guarantee: Guarantee) -> anyhow::Result<Instance> {
        let args = [
            ("application.id", self.id.clone()),
            ("bootstrap.servers", self.bootstrap.clone()),
            ("input", self.input.clone()),
            ("output", self.output.clone()),
            ("store", STORE.to_string()),
            ("gap.ms", GAP.to_string()),
            ("grace.ms", GRACE.to_string()),
            ("retention.ms", RETENTION.to_string()),
            ("processing.guarantee", guarantee.name().to_string()),
            ("commit.interval.ms", "200".to_string()),
            ("state.dir", self.state_dir(instance).display().to_string()),
        ];
        Ok(Instance::Java(JavaApp::spawn(
            &format!("{}/{instance}", self.id),
            &args,
        )?))
    }

    pub fn kstate(&self, instance: &str, guarantee: Guarantee) -> anyhow::Result<Instance> {
        Ok(Instance::Kstate(Worker::start(
            instance,
            &[
                ("application.id", self.id.clone()),
                ("bootstrap.servers", self.bootstrap.clone()),
                ("input.topic", self.input.clone()),
                ("output.topic", self.output.clone()),
                ("store.name", STORE.into()),
                ("inactivity.gap.ms", GAP.to_string()),
                ("grace.ms", GRACE.to_string()),
                ("retention.ms", RETENTION.to_string()),
                ("commit.interval.ms", "200".into()),
                ("processing.guarantee", guarantee.name().into()),
                ("state.dir", self.state_dir(instance).display().to_string()),
                ("metrics.addr", String::new()),
            ],
        )?))
    }

    pub fn start(
        &self,
        side: Side,
        instance: &str,
        guarantee: Guarantee,
    ) -> anyhow::Result<Instance> {
        match side {
            Side::Java => self.java(instance, guarantee),
            Side::Kstate => self.kstate(instance, guarantee),
        }
    }

    pub async fn produce(&self, clicks: &[Click]) -> anyhow::Result<BTreeMap<i32, i64>> {
        produce(&self.bootstrap, &self.input, PARTITIONS, clicks).await?;
        common::high_watermarks(&self.bootstrap, &self.input, PARTITIONS)
    }

    pub fn view(&self, guarantee: Guarantee) -> anyhow::Result<View> {
        Ok(compacted(&read_topic(
            &self.bootstrap,
            &self.output,
            guarantee.read_committed(),
        )?))
    }

    /// Polls until the group has committed `ends` on every input partition with records,
    /// failing early if an instance exits.
    pub async fn wait_committed(
        &self,
        ends: &BTreeMap<i32, i64>,
        running: &mut [&mut Instance],
    ) -> anyhow::Result<()> {
        let mut conn = connect(&self.bootstrap).await?;
        let partitions: Vec<(String, i32)> = ends
            .iter()
            .filter(|(_, end)| **end > 0)
            .map(|(p, _)| (self.input.clone(), *p))
            .collect();
        let deadline = Instant::now() + DEADLINE;
        loop {
            for instance in running.iter_mut() {
                instance.check_alive()?;
            }
            let offsets = conn.offset_fetch(&self.id, &partitions).await;
            let done = offsets.as_ref().is_ok_and(|offsets| {
                partitions.iter().all(|(_, p)| {
                    offsets
                        .iter()
                        .any(|o| o.partition == *p && o.offset >= ends[p])
                })
            });
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = running.iter().map(|i| i.tail()).collect();
                bail!(
                    "{}: within {DEADLINE:?} the input was not committed up to {ends:?} \
                     (committed {offsets:?})\n{}",
                    self.id,
                    tails.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A running Kafka Streams instance or kstate worker.
pub enum Instance {
    Java(JavaApp),
    Kstate(Worker),
}

impl Instance {
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self {
            Instance::Java(app) => app.check_alive(),
            Instance::Kstate(worker) => worker.check_alive(),
        }
    }

    pub fn tail(&self) -> String {
        match self {
            Instance::Java(app) => format!("--- {} ---\n{}", app.name, app.tail()),
            Instance::Kstate(worker) => format!("--- {} ---\n{}", worker.name, worker.tail()),
        }
    }

    /// SIGTERM and a clean exit: Kafka Streams closes (143 after its shutdown hook), kstate
    /// commits, closes its tasks and leaves (0).
    pub async fn stop_cleanly(&mut self) -> anyhow::Result<()> {
        match self {
            Instance::Java(app) => {
                let status = app
                    .terminate(Duration::from_secs(40))
                    .context("Kafka Streams did not exit within 40 s of SIGTERM")?;
                ensure!(
                    status.code() == Some(143),
                    "Kafka Streams exited with {status}"
                );
                common::wait_for("Kafka Streams' clean close", Duration::from_secs(5), || {
                    let closed = app.said("kstate-reference: closed");
                    async move { closed.then_some(()) }
                })
                .await
                .with_context(|| app.tail())
            }
            Instance::Kstate(worker) => {
                let status = worker.terminate(Duration::from_secs(40))?;
                ensure!(
                    status.success(),
                    "kstate exited with {status}\n{}",
                    worker.tail()
                );
                Ok(())
            }
        }
    }

    /// SIGKILL: no commit, no leave.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        match self {
            Instance::Java(app) => app.kill(),
            Instance::Kstate(worker) => worker.kill(),
        }
    }
}

pub async fn connect(bootstrap: &str) -> anyhow::Result<BrokerConnection> {
    let addr = bootstrap.split(',').next().unwrap_or_default().to_string();
    BrokerConnection::connect(addr.clone(), ConnectionConfig::default())
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// The group as the broker describes it, once it has `members` members and a configured
/// topology (the changelog's partition count resolved from the source topic).
pub async fn describe(
    bootstrap: &str,
    group: &str,
    members: usize,
) -> anyhow::Result<DescribedGroup> {
    let mut conn = connect(bootstrap).await?;
    let mut last = None;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let described = conn.describe(&[group.to_string()], false).await?;
        if let Some(g) = described.groups.into_iter().next() {
            let configured = g
                .topology
                .as_ref()
                .and_then(|t| t.subtopologies.as_ref())
                .is_some_and(|s| {
                    s.iter()
                        .flat_map(|s| &s.state_changelog_topics)
                        .all(|c| c.partitions > 0)
                });
            if g.error_code == 0 && configured && g.members.len() == members {
                return Ok(g);
            }
            last = Some(g);
        }
        if Instant::now() >= deadline {
            bail!("group {group} never had a configured topology and {members} members: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The topology with the application id replaced by `<app>`, so two groups compare.
pub fn normalized(topology: &DescribedTopology, app: &str) -> String {
    format!("{topology:#?}").replace(app, "<app>")
}
