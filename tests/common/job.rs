//! One streams job for end-to-end tests of `kstate-worker`: its own application id, a
//! 4-partition input and output topic, and a state dir per worker; workers started with the
//! test's session settings; the output read back as a compacted view and awaited.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::worker::{compacted, produce, read_topic, Click, Worker};

pub const PARTITIONS: i32 = 4;
pub const GAP: i64 = 10_000;
pub const GRACE: i64 = 20_000;

pub type View = BTreeMap<(String, i64, i64), i64>;

pub struct Job {
    pub bootstrap: String,
    pub app: String,
    pub input: String,
    pub output: String,
    pub state: std::path::PathBuf,
}

impl Job {
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        let bootstrap = crate::common::broker();
        let app = crate::common::unique(name);
        let input = format!("{app}-clicks");
        let output = format!("{app}-counts");
        crate::common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
        crate::common::create_topic(&bootstrap, &output, PARTITIONS, &[]).await?;
        let state = std::env::temp_dir().join(&app);
        Ok(Self {
            bootstrap,
            app,
            input,
            output,
            state,
        })
    }

    pub fn worker(&self, name: &str, guarantee: &str) -> anyhow::Result<Worker> {
        self.worker_with(name, guarantee, &[])
    }

    /// A worker with more `--set` overrides (later ones win).
    pub fn worker_with(
        &self,
        name: &str,
        guarantee: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Worker> {
        let mut settings = vec![
            ("application.id", self.app.clone()),
            ("bootstrap.servers", self.bootstrap.clone()),
            ("input.topic", self.input.clone()),
            ("output.topic", self.output.clone()),
            ("store.name", "counts".into()),
            ("inactivity.gap.ms", GAP.to_string()),
            ("grace.ms", GRACE.to_string()),
            // Sessions outlive the test: the reference model has no expiry, and expiry
            // at gap + grace can hide a session a record should still merge with
            // (Kafka Streams drops whole segments the same way).
            ("retention.ms", "3600000".into()),
            ("commit.interval.ms", "300".into()),
            ("processing.guarantee", guarantee.into()),
            ("state.dir", self.state.join(name).display().to_string()),
            ("metrics.addr", String::new()),
        ];
        settings.extend(extra.iter().cloned());
        Worker::start(name, &settings)
    }

    /// The group's committed offset of each input partition (`None`: nothing committed).
    pub async fn committed(&self) -> anyhow::Result<Vec<Option<i64>>> {
        use kstate::runtime::{CoordinatorOffsets, OffsetCommitter};
        let mut offsets = CoordinatorOffsets::new(
            self.app.clone(),
            &self.bootstrap,
            kstate::protocol::ConnectionConfig::default(),
            Duration::from_secs(30),
        );
        let partitions: Vec<(String, i32)> =
            (0..PARTITIONS).map(|p| (self.input.clone(), p)).collect();
        Ok(offsets.fetch(&partitions).await?)
    }

    /// The end offset of each input partition.
    pub fn input_ends(&self) -> anyhow::Result<Vec<i64>> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()?;
        (0..PARTITIONS)
            .map(|p| {
                Ok(consumer
                    .fetch_watermarks(&self.input, p, Duration::from_secs(10))?
                    .1)
            })
            .collect()
    }

    pub async fn produce(&self, clicks: &[Click]) -> anyhow::Result<()> {
        produce(&self.bootstrap, &self.input, PARTITIONS, clicks).await
    }

    pub fn view(&self, read_committed: bool) -> anyhow::Result<View> {
        Ok(compacted(&read_topic(
            &self.bootstrap,
            &self.output,
            read_committed,
        )?))
    }

    /// Polls the output until `done` holds for its compacted view.
    pub async fn wait_view(
        &self,
        what: &str,
        read_committed: bool,
        workers: &[&Worker],
        expected: &View,
        done: impl Fn(&View) -> bool,
    ) -> anyhow::Result<View> {
        let last = std::sync::Mutex::new(View::new());
        let result = crate::common::wait_for(what, Duration::from_secs(90), || async {
            let view = self.view(read_committed).ok()?;
            if done(&view) {
                return Some(view);
            }
            *last.lock().ok()? = view;
            None
        })
        .await;
        result.with_context(|| {
            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
            let missing: Vec<_> = expected
                .iter()
                .filter(|(k, v)| last.get(*k) != Some(*v))
                .take(5)
                .map(|(k, v)| (k, v, last.get(k)))
                .collect();
            let extra: Vec<_> = last.iter().filter(|(k, _)| !expected.contains_key(*k)).take(5).collect();
            let logs = workers
                .iter()
                .map(|w| format!("--- {} ---\n{}", w.name, w.tail()))
                .collect::<Vec<_>>()
                .join("\n");
            format!(
                "last view: {} sessions, expected {}; differing (key, expected, got) {missing:?}; unexpected {extra:?}\n{logs}",
                last.len(),
                expected.len()
            )
        })
    }
}

/// The sessions are those of the reference and no count is below it; the excess of all
/// counts together is at most `max_excess` (records processed twice after a crash).
pub fn at_least_once_matches(view: &View, reference: &View, max_excess: i64) -> bool {
    view.len() == reference.len()
        && reference
            .iter()
            .all(|(k, r)| view.get(k).is_some_and(|v| v >= r))
        && view.values().sum::<i64>() - reference.values().sum::<i64>() <= max_excess
}

pub async fn wait_running(worker: &Worker, tasks: usize) -> anyhow::Result<()> {
    crate::common::wait_for(
        &format!("{} to run {tasks} tasks", worker.name),
        Duration::from_secs(60),
        || async { (worker.count("task running") >= tasks).then_some(()) },
    )
    .await
    .with_context(|| worker.tail())
}

/// `(task, restored, from, full)` of every `task restored` line of a worker's log.
pub fn restores(worker: &Worker) -> Vec<(String, u64, i64, bool)> {
    worker
        .log()
        .lines()
        .filter(|l| l.contains("task restored"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            (
                field("task"),
                field("restored").parse().unwrap_or(u64::MAX),
                field("from").parse().unwrap_or(-1),
                field("full") == "true",
            )
        })
        .collect()
}

/// Sets the streams group config `streams.num.standby.replicas` of `group` (before its
/// members join): KIP-1071 assigns standby tasks when it is above 0.
pub async fn set_standby_replicas(
    bootstrap: &str,
    group: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
    let admin = crate::common::admin(bootstrap);
    let replicas = replicas.to_string();
    let config = AlterConfig::new(ResourceSpecifier::Group(group))
        .set("streams.num.standby.replicas", &replicas);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for result in admin.alter_configs([&config], &opts).await? {
        result.map_err(|(resource, e)| anyhow::anyhow!("altering {resource:?}: {e}"))?;
    }
    Ok(())
}
