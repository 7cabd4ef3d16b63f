//! [`Worker`]: a session-window aggregation job on the streams group, built with
//! [`Worker::builder`] from topics, [`SessionWindows`], the policy enums and closures, and
//! run until a shutdown future resolves. Owns turning those choices into the runtime's
//! settings and processor factory (through [`WorkerConfig`], so the binary and a library
//! user build a worker the same way); the processing itself is the runtime's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::config::{DeserializationPolicy, ProcessingGuarantee, WorkerConfig};
use super::http::{self, HttpError};
use crate::changelog::CorruptRecordPolicy;
use crate::runtime::{
    count_factory, ProcessorFactory, RuntimeConfig, RuntimeError, SessionAggregationFactory,
    StatusBoard,
};
use crate::session::{Aggregator, Initializer, Merger, Serde, SessionError, SessionWindows};

/// Why a worker could not be built or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The session windows are invalid (e.g. a retention below gap + grace).
    #[error("session windows")]
    Windows(#[from] SessionError),
    /// The process id in `state.dir` could not be read or created.
    #[error("state.dir {path}")]
    StateDir {
        /// The state directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP endpoint (`metrics.addr`) could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The runtime stopped with an error; its message names the task, topic, partition and
    /// offset where there is one, with the cause chained (`std::error::Error::source`).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

type MakeFactory = Box<dyn FnOnce(SessionWindows) -> Arc<dyn ProcessorFactory> + Send>;

/// Builds a [`Worker`]; every setting starts at the default of `config/worker.toml`.
pub struct WorkerBuilder {
    config: WorkerConfig,
    aggregation: MakeFactory,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A session-window aggregation job on a Kafka streams group (KIP-1071): it joins the group
/// `application.id`, restores the state of each task it is assigned from the task's
/// changelog, aggregates the input per key and session, and writes every session update to
/// the output topic. Build one with [`Worker::builder`].
pub struct Worker {
    config: RuntimeConfig,
    factory: Arc<dyn ProcessorFactory>,
    http_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A builder with the defaults of `config/worker.toml` and the session count as the
    /// aggregation.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::from_config(WorkerConfig::default())
    }

    /// The status board this worker publishes to (readiness, tasks, restore progress, lag).
    pub fn status(&self) -> StatusBoard {
        self.config.status.clone()
    }

    /// Runs until `shutdown` resolves, then commits, closes every task and leaves the group.
    /// With an HTTP address set, serves `/metrics`, `/healthz`, `/readyz` and `/status` on it
    /// until then (installing the process's Prometheus recorder on first use).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let _server = match self.http_addr {
            Some(addr) => {
                let server = http::serve(addr, self.config.status.clone()).await?;
                let bound = server.addr();
                info!(%bound, "serving /metrics, /healthz, /readyz and /status on http://{bound}");
                Some(server)
            }
            None => None,
        };
        crate::runtime::run(self.config, self.factory, shutdown).await?;
        Ok(())
    }
}

impl WorkerBuilder {
    /// A builder holding `config` (e.g. [`WorkerConfig::load`]ed from a file) and the session
    /// count as the aggregation.
    pub fn from_config(config: WorkerConfig) -> Self {
        Self {
            config,
            aggregation: Box::new(|windows| Arc::new(count_factory(windows))),
        }
    }

    /// Replaces every setting with `config` (e.g. [`WorkerConfig::load`]ed from a file and
    /// `--set` overrides); the aggregation is kept.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// The streams group id (`application.id`); also the prefix of the changelog topic.
    pub fn application_id(mut self, id: impl Into<String>) -> Self {
        self.config.application_id = id.into();
        self
    }

    /// The brokers to bootstrap from, `host:port[,host:port…]` (`bootstrap.servers`).
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.config.bootstrap_servers = servers.into();
        self
    }

    /// The input topic: UTF-8 string keys, values read by the aggregation's value serde.
    pub fn input_topic(mut self, topic: impl Into<String>) -> Self {
        self.config.input_topic = topic.into();
        self
    }

    /// The output topic: one record per session update, keyed `key ‖ end ‖ start`.
    pub fn output_topic(mut self, topic: impl Into<String>) -> Self {
        self.config.output_topic = topic.into();
        self
    }

    /// The store name; its changelog is `<application.id>-<store name>-changelog`.
    pub fn store_name(mut self, name: impl Into<String>) -> Self {
        self.config.store_name = name.into();
        self
    }

    /// The session windows: inactivity gap, grace and retention.
    pub fn windows(mut self, windows: SessionWindows) -> Self {
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        self.config.inactivity_gap = ms(windows.gap_ms());
        self.config.grace = ms(windows.grace_ms());
        self.config.retention = ms(windows.retention_ms());
        self
    }

    /// How often state is flushed and offsets committed (`commit.interval.ms`).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.config.commit_interval = interval;
        self
    }

    /// Bytes of record cache shared by every task's store; 0 writes every update through.
    pub fn cache_max_bytes(mut self, bytes: usize) -> Self {
        self.config.cache_max_bytes = bytes;
        self
    }

    /// At-least-once or exactly-once (`processing.guarantee`).
    pub fn processing_guarantee(mut self, guarantee: ProcessingGuarantee) -> Self {
        self.config.processing_guarantee = guarantee;
        self
    }

    /// What to do with an input value the aggregation cannot deserialize.
    pub fn deserialization_policy(mut self, policy: DeserializationPolicy) -> Self {
        self.config.deserialization_policy = policy;
        self
    }

    /// What to do with a changelog record that cannot be decoded during a restore.
    pub fn corrupt_changelog_records(mut self, policy: CorruptRecordPolicy) -> Self {
        self.config.restore_skip_corrupt = policy == CorruptRecordPolicy::Skip;
        self
    }

    /// Where task directories (snapshots, checkpoints) and the process id live.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = dir.into();
        self
    }

    /// Where to serve `/metrics`, `/healthz`, `/readyz` and `/status`; `None` serves nothing.
    pub fn http_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.config.metrics_addr = addr;
        self
    }

    /// A librdkafka setting for every client (e.g. `security.protocol`).
    pub fn kafka(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.kafka.push(key, value);
        self
    }

    /// Aggregates each session with `initializer`, `aggregator` and `merger` (closures or
    /// types implementing the traits), reading input values with `value_serde` and storing
    /// aggregates with `aggregate_serde` (also the output value format). Keys are UTF-8
    /// strings. Replaces the default count.
    pub fn aggregate<V, A, VS, AS, I, G, M>(
        mut self,
        value_serde: VS,
        aggregate_serde: AS,
        initializer: I,
        aggregator: G,
        merger: M,
    ) -> Self
    where
        V: Default + 'static,
        A: Send + 'static,
        VS: Serde<V> + Clone + Send + Sync + 'static,
        AS: Serde<A> + Clone + Send + Sync + 'static,
        I: Initializer<A> + Clone + Send + Sync + 'static,
        G: Aggregator<String, V, A> + Clone + Send + Sync + 'static,
        M: Merger<String, A> + Clone + Send + Sync + 'static,
    {
        self.aggregation = Box::new(move |windows| {
            Arc::new(SessionAggregationFactory::<V, A, _, _, _, _, _>::new(
                windows,
                value_serde,
                aggregate_serde,
                initializer,
                aggregator,
                merger,
            ))
        });
        self
    }

    /// Checks the settings and builds the worker (reading or creating the process id in the
    /// state directory).
    pub fn build(self) -> Result<Worker, WorkerError> {
        let windows = self.config.windows()?;
        let config = self
            .config
            .runtime_config()
            .map_err(|source| WorkerError::StateDir {
                path: self.config.state_dir.clone(),
                source,
            })?;
        Ok(Worker {
            config,
            factory: (self.aggregation)(windows),
            http_addr: self.config.metrics_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::LongSerde;

    #[test]
    fn the_builder_carries_every_choice_into_the_runtime_settings() {
        let dir = std::env::temp_dir().join(format!("kstate-builder-{}", std::process::id()));
        let windows = SessionWindows::new(
            Duration::from_secs(5),
            Duration::from_secs(1),
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        let worker = Worker::builder()
            .application_id("app")
            .input_topic("in")
            .output_topic("out")
            .store_name("sums")
            .windows(windows)
            .processing_guarantee(ProcessingGuarantee::ExactlyOnceV2)
            .deserialization_policy(DeserializationPolicy::LogAndContinue)
            .corrupt_changelog_records(CorruptRecordPolicy::Skip)
            .state_dir(&dir)
            .http_addr(None)
            .aggregate(
                LongSerde,
                LongSerde,
                || 0i64,
                |_: &String, v: &i64, a: i64| a + v,
                |_: &String, a: i64, b: i64| a + b,
            )
            .build()
            .unwrap();
        let c = &worker.config;
        assert_eq!(
            (
                c.application_id.as_str(),
                c.input_topic.as_str(),
                c.output_topic.as_str()
            ),
            ("app", "in", "out")
        );
        assert_eq!(c.store_name, "sums");
        assert_eq!(c.store_retention, Duration::from_secs(60));
        assert!(c.exactly_once);
        assert!(c.restore_skip_corrupt);
        assert_eq!(c.input_errors, crate::runtime::InputErrorPolicy::Continue);
        assert_eq!(worker.http_addr, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_windows_are_refused_at_build() {
        let config = WorkerConfig {
            retention: Duration::from_millis(1),
            ..WorkerConfig::default()
        };
        let err = WorkerBuilder::from_config(config).build().unwrap_err();
        assert!(matches!(err, WorkerError::Windows(_)), "{err}");
    }
}
