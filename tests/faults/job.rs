//! One streams job for the fault tests: its topics on a given broker, its workers (each with
//! a state dir of its own that survives restarts), its input, and the check of its output
//! against the reference of docs/DESIGN.md §4 under the job's processing guarantee.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::common;
use crate::common::worker::{compacted, produce, read_topic, Click, Worker};

pub const PARTITIONS: i32 = 4;
pub const GAP: i64 = 10_000;
pub const GRACE: i64 = 20_000;

/// `(key, start, end) -> count`, the compacted output.
pub type View = BTreeMap<(String, i64, i64), i64>;

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
}

pub struct Job {
    pub bootstrap: String,
    pub app: String,
    pub input: String,
    pub output: String,
    pub guarantee: Guarantee,
    state: PathBuf,
}

impl Job {
    /// Creates the input and output topics of a new application on `bootstrap`.
    pub async fn new(bootstrap: &str, name: &str, guarantee: Guarantee) -> anyhow::Result<Self> {
        let app = common::unique(name);
        let input = format!("{app}-clicks");
        let output = format!("{app}-counts");
        common::create_topic(bootstrap, &input, PARTITIONS, &[]).await?;
        common::create_topic(bootstrap, &output, PARTITIONS, &[]).await?;
        let state = std::env::temp_dir().join(&app);
        Ok(Self {
            bootstrap: bootstrap.to_string(),
            app,
            input,
            output,
            guarantee,
            state,
        })
    }

    /// The changelog topic the workers create for the store.
    pub fn changelog(&self) -> String {
        format!("{}-counts-changelog", self.app)
    }

    /// The state dir of the worker called `name`: the same for every start of that name.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// Starts the worker `name` on its own state dir.
    pub fn worker(&self, name: &str) -> anyhow::Result<Worker> {
        Worker::start(
            name,
            &[
                ("application.id", self.app.clone()),
                ("bootstrap.servers", self.bootstrap.clone()),
                ("input.topic", self.input.clone()),
                ("output.topic", self.output.clone()),
                ("store.name", "counts".into()),
                ("inactivity.gap.ms", GAP.to_string()),
                ("grace.ms", GRACE.to_string()),
                // The reference model has no expiry.
                ("retention.ms", "3600000".into()),
                ("commit.interval.ms", "200".into()),
                ("processing.guarantee", self.guarantee.name().into()),
                ("state.dir", self.state_dir(name).display().to_string()),
                ("metrics.addr", String::new()),
            ],
        )
    }

    pub async fn produce(&self, clicks: &[Click]) -> anyhow::Result<()> {
        produce(&self.bootstrap, &self.input, PARTITIONS, clicks).await
    }

    /// The compacted output as a reader sees it: read_committed under exactly-once.
    pub async fn view(&self) -> anyhow::Result<View> {
        let (bootstrap, output) = (self.bootstrap.clone(), self.output.clone());
        let committed = self.guarantee == Guarantee::ExactlyOnce;
        let records =
            tokio::task::spawn_blocking(move || read_topic(&bootstrap, &output, committed))
                .await??;
        Ok(compacted(&records))
    }

    /// Waits until the output matches `reference` under the job's guarantee (see
    /// [`matches`]); returns the excess count of at-least-once. Fails naming the differences
    /// and with the workers' last log lines.
    pub async fn wait_output(
        &self,
        reference: &View,
        workers: &[&Worker],
        within: Duration,
    ) -> anyhow::Result<i64> {
        let last = std::sync::Mutex::new(View::new());
        let result = common::wait_for("the output to match the reference", within, || async {
            let view = self.view().await.ok()?;
            let excess = matches(self.guarantee, &view, reference);
            *last.lock().ok()? = view;
            excess
        })
        .await;
        result.with_context(|| {
            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
            let differing: Vec<_> = reference
                .iter()
                .filter(|(k, v)| last.get(*k) != Some(*v))
                .take(5)
                .map(|(k, v)| (k, v, last.get(k)))
                .collect();
            let extra: Vec<_> = last
                .iter()
                .filter(|(k, _)| !reference.contains_key(*k))
                .take(5)
                .collect();
            let logs: Vec<String> = workers
                .iter()
                .map(|w| format!("--- {} ---\n{}", w.name, w.tail()))
                .collect();
            format!(
                "{} ({}): last view {} sessions, reference {}; differing (key, reference, got) \
                 {differing:?}; unexpected {extra:?}\n{}",
                self.app,
                self.guarantee.name(),
                last.len(),
                reference.len(),
                logs.join("\n")
            )
        })
    }
}

/// The input of a trial: ~2,000 clicks of 30 users in 40 bursts an hour ago, without late
/// records (a restart forgets stream time, docs/DESIGN.md §4).
pub fn clicks(seed: u64) -> Vec<Click> {
    crate::common::worker::click_stream(
        30,
        40,
        common::now_ms() - 3_600_000,
        GAP,
        GRACE,
        false,
        seed,
    )
}

/// `Some(excess)` when `view` matches `reference`: under exactly-once equal (excess 0);
/// under at-least-once the same sessions, none counted less (records after the last commit
/// are counted again), the excess being how many more counts there are in all.
pub fn matches(guarantee: Guarantee, view: &View, reference: &View) -> Option<i64> {
    match guarantee {
        Guarantee::ExactlyOnce => (view == reference).then_some(0),
        Guarantee::AtLeastOnce => {
            let same_sessions = view.len() == reference.len()
                && reference
                    .iter()
                    .all(|(k, r)| view.get(k).is_some_and(|v| v >= r));
            same_sessions.then(|| view.values().sum::<i64>() - reference.values().sum::<i64>())
        }
    }
}

/// A small deterministic generator (xorshift64*), so that a trial replays from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1))
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }

    pub fn millis(&mut self, bound: u64) -> Duration {
        Duration::from_millis(self.below(bound))
    }
}

/// Sends `signal` (e.g. "TERM") to the worker without waiting (the caller reaps it later).
pub fn signal(worker: &Worker, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &worker.pid().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {} failed", worker.pid());
    Ok(())
}
