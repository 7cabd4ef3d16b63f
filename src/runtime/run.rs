//! The driver of a worker: it builds the Kafka clients, then runs one loop that waits on
//! membership events, input records, changelog records of restoring and standby tasks,
//! delivery reports and the [`TaskManager`]'s deadline, feeds each to the manager (and the
//! records to their task), and carries out the manager's actions. It makes no decision of
//! its own: when a task restores, processes, commits or closes is the manager's. Restores
//! run batch by batch between input batches, so running tasks keep processing and
//! committing while others restore.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::StreamConsumer;
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::eos::Transactions;
use super::error::RuntimeError;
use super::manager::{Action, ManagerConfig, TaskManager};
use super::offsets::CoordinatorOffsets;
use super::processor::ProcessorFactory;
use super::producer::{Marks, RecordProducer};
use super::restore::RestoreReader;
use super::state_lock::StateDirLock;
use super::task::Task;
use crate::changelog::{
    changelog_topic_configs, changelog_topic_name, producer_config, CorruptRecordPolicy,
    RestoreOptions,
};
use crate::membership::{
    session_count_topology, DriverConfig, DriverHandle, MembershipConfig, MembershipDriver,
};
use crate::protocol::{BrokerConnection, ConnectionConfig, KafkaProperties};
use crate::store::CacheBudget;

/// What to do with an input record whose value cannot be deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputErrorPolicy {
    Fail,
    Continue,
}

/// Everything the runtime needs to run one worker.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub application_id: String,
    pub bootstrap: String,
    pub input_topic: String,
    pub output_topic: String,
    pub store_name: String,
    /// The byte store under each task's cache (`store.type`), opened per task under
    /// `<state_dir>/<application_id>/<task id>/<store_name>` when persistent.
    pub store_type: crate::store::StoreType,
    pub store_retention: Duration,
    pub commit_interval: Duration,
    pub cache_max_bytes: usize,
    pub exactly_once: bool,
    pub process_id: String,
    pub member_id: String,
    pub input_errors: InputErrorPolicy,
    pub restore_skip_corrupt: bool,
    /// librdkafka settings for every client (security); `Debug` redacts secrets.
    pub kafka: KafkaProperties,
    /// Bound on the graceful leave at shutdown.
    pub leave_timeout: Duration,
    /// Where task directories (`<application.id>/<task id>/`: snapshot and `.checkpoint`)
    /// live.
    pub state_dir: std::path::PathBuf,
    /// How long a store given away is kept in memory for a cheap hand-back.
    pub state_cleanup_delay: Duration,
    /// How long retriable coordinator errors are retried before they are fatal.
    pub task_timeout: Duration,
    /// When a persistent store is checkpointed between clean closes.
    pub checkpoint: super::CheckpointPolicy,
    /// Where the runtime publishes the member's and the tasks' status (`/readyz`, `/status`).
    pub status: super::status::StatusBoard,
}

/// Kafka Streams' `transaction.timeout.ms` under exactly-once: a dead worker's open
/// transaction blocks read_committed readers for at most this long when nobody fences it.
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a task's restore started, for its `task restored` line.
pub(super) struct RestoreStats {
    pub(super) started: Instant,
    pub(super) from: i64,
    pub(super) end: i64,
    pub(super) full: bool,
    pub(super) applied: u64,
}

pub(super) struct Runtime {
    pub(super) config: RuntimeConfig,
    pub(super) factory: Arc<dyn ProcessorFactory>,
    pub(super) manager: TaskManager,
    pub(super) producer: RecordProducer,
    pub(super) output_partitions: i32,
    pub(super) txn: Option<Transactions>,
    /// Under exactly-once: the transactional producer's configuration (to fence the ids of
    /// vanished members) and the process ids of the other members seen so far.
    pub(super) txn_config: Option<ClientConfig>,
    pub(super) peers: BTreeSet<String>,
    pub(super) offsets: CoordinatorOffsets,
    pub(super) driver: DriverHandle,
    pub(super) budget: CacheBudget,
    pub(super) input_topic: Arc<str>,
    pub(super) changelog_topic: String,
    pub(super) corrupt_records: CorruptRecordPolicy,
    /// Stores of active and standby tasks.
    pub(super) tasks: BTreeMap<i32, Task>,
    /// Stores of tasks closed cleanly, kept for a cheap hand-back.
    pub(super) dormant: BTreeMap<i32, Task>,
    pub(super) restores: BTreeMap<i32, RestoreStats>,
    /// Tasks whose input partition is assigned (they produce to their changelog).
    pub(super) processing: BTreeSet<i32>,
    /// At-least-once flushes waiting for their acknowledgements.
    pub(super) awaiting: VecDeque<(u64, Marks)>,
    /// When the commit cycle in flight started (its flush).
    pub(super) cycle_started: Option<Instant>,
    pub(super) left: bool,
    /// Records handled since the last throughput line, and when that line was logged.
    pub(super) handled: u64,
    pub(super) last_report: Instant,
    /// When restore progress and standby lags were last published.
    pub(super) last_progress: Instant,
    /// When the state directory was last swept for obsolete task directories.
    pub(super) last_state_cleanup: Instant,
    pub(super) _state_lock: StateDirLock,
}

/// librdkafka's `topic.metadata.refresh.interval.ms` for the input consumer (its default is
/// 5 minutes). After a leader epoch change (a broker fenced by its controller, as when it is
/// paused past its broker session) librdkafka validates each fetch position (KIP-320) and
/// fetches no more from a partition until that validation succeeds. A validation that finds
/// no leader returns without a retry timer ("Retrying when available", rdkafka_offset.c):
/// only a metadata update for the topic restarts it (a partition still in
/// validate-epoch-wait is revalidated on every update, rdkafka_topic.c), and once every
/// partition has a leader the only update left is the periodic refresh. Every 5 s bounds such
/// a stall to seconds, for one Metadata request per worker; a
/// `kafka.topic.metadata.refresh.interval.ms` setting overrides it.
const INPUT_METADATA_REFRESH_MS: &str = "5000";

/// The input consumer's settings that differ from librdkafka's defaults; a `kafka.<key>`
/// setting overrides each. `fetch.wait.max.ms` bounds the broker's wait at the end of the
/// input (librdkafka's 500 ms default delays the first records after a quiet spell).
/// `fetch.queue.backoff.ms` is how long librdkafka waits before fetching a partition again
/// once its queue held `queued.min.messages` (default 1 s): a consumer that drains that
/// queue within the second then idles, as the restore consumer did (2.1× faster restores
/// at 10 ms, BENCHMARKS.md); on the input, at today's processing rate, no setting measured
/// (`fetch.queue.backoff.ms`, `queued.min.messages`, `fetch.min.bytes`,
/// `max.partition.fetch.bytes`, the producer's `linger.ms`) moved the throughput beyond the
/// run-to-run spread, the consume path being a few percent of the worker's profile.
/// `max.partition.fetch.bytes` (librdkafka's default 1 MiB) sets how many records of one
/// partition arrive in a row, and so the consumption order: the tasks share one cache
/// budget and each evicts only its own entries (Kafka Streams' `ThreadCache`), so runs of
/// ~40k records of one task leave the others a sliver of the budget and make the cache
/// write through. At 64 KiB (runs of ~2.5k records, as Kafka Streams' tasks take turns of
/// at most `max.poll.records` buffered records) the bench's workload 1 writes 0.655
/// changelog records per input instead of 0.752 (`examples/cache_replay`: 0.691 at runs
/// of 2.5k, 0.938 at 30k, 0.688 interleaved record by record, 120k records per commit).
const INPUT_DEFAULTS: &[(&str, &str)] = &[
    (
        "topic.metadata.refresh.interval.ms",
        INPUT_METADATA_REFRESH_MS,
    ),
    ("fetch.wait.max.ms", "100"),
    ("fetch.queue.backoff.ms", "10"),
    ("max.partition.fetch.bytes", "65536"),
];

fn client_config(config: &RuntimeConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap);
    for (k, v) in &config.kafka {
        c.set(k, v);
    }
    c
}

/// `kafka.transaction.timeout.ms` if set, else [`DEFAULT_TRANSACTION_TIMEOUT`].
fn transaction_timeout(config: &RuntimeConfig) -> Duration {
    config
        .kafka
        .iter()
        .rev()
        .find(|(k, _)| k == "transaction.timeout.ms")
        .and_then(|(_, v)| v.parse().ok())
        .map_or(DEFAULT_TRANSACTION_TIMEOUT, Duration::from_millis)
}

fn partition_count(config: &RuntimeConfig, topic: &str) -> Result<i32, RuntimeError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer =
        client_config(config)
            .create()
            .map_err(|source| RuntimeError::Client {
                what: "metadata",
                source,
            })?;
    let metadata =
        tokio::task::block_in_place(|| client.fetch_metadata(Some(topic), Duration::from_secs(30)))
            .map_err(|e| RuntimeError::Metadata {
                topic: topic.to_string(),
                reason: e.to_string(),
            })?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| RuntimeError::Metadata {
            topic: topic.to_string(),
            reason: "the topic does not exist; create it before starting the worker".into(),
        })?;
    Ok(t.partitions().len() as i32)
}

/// Runs a worker until `shutdown` resolves: joins the streams group, restores and processes
/// its tasks, and on shutdown commits, closes every task and leaves the group. Needs a
/// multi-thread tokio runtime.
pub async fn run(
    config: RuntimeConfig,
    factory: Arc<dyn ProcessorFactory>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RuntimeError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Err(RuntimeError::CurrentThreadRuntime);
    }
    let state_lock = StateDirLock::acquire(&config.state_dir, &config.application_id)?;
    let connection = ConnectionConfig::from_properties(config.kafka.pairs())
        .map_err(|source| RuntimeError::Connection { source })?;
    // Connect once before any client starts: a wrong password, an untrusted certificate or
    // a wrong host name stops the worker here, named, instead of every client retrying.
    match BrokerConnection::connect_any(&config.bootstrap, connection.clone()).await {
        Err(source) if source.is_security_failure() => {
            return Err(RuntimeError::Connection { source })
        }
        Err(e) => warn!(
            error = &e as &dyn std::error::Error,
            "no broker answers yet; the clients keep trying"
        ),
        Ok(_) => {}
    }
    let changelog_topic = changelog_topic_name(&config.application_id, &config.store_name);
    let mut producer_cfg = producer_config(&config.bootstrap, &config.kafka);
    if config.exactly_once {
        let timeout = transaction_timeout(&config);
        producer_cfg
            .set(
                "transactional.id",
                format!("{}-{}", config.application_id, config.process_id),
            )
            .set("transaction.timeout.ms", timeout.as_millis().to_string())
            .set("message.timeout.ms", timeout.as_millis().to_string());
    }
    let output_partitions = partition_count(&config, &config.output_topic)?;
    let input_partitions = partition_count(&config, &config.input_topic)?;
    let producer = RecordProducer::new(
        &producer_cfg,
        changelog_topic.clone(),
        input_partitions,
        config.output_topic.clone(),
        output_partitions,
    )
    .map_err(|source| RuntimeError::Client {
        what: "producer",
        source,
    })?;
    let txn = if config.exactly_once {
        Some(Transactions::init(
            producer.producer(),
            &config.application_id,
            Duration::from_secs(60),
        )?)
    } else {
        None
    };
    let mut consumer_cfg = client_config(&config);
    for (key, value) in INPUT_DEFAULTS {
        if !config.kafka.pairs().any(|(k, _)| k == *key) {
            consumer_cfg.set(*key, *value);
        }
    }
    let consumer: StreamConsumer = consumer_cfg
        .set(
            "group.id",
            format!("{}-kstate-input", config.application_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "isolation.level",
            if config.exactly_once {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .map_err(|source| RuntimeError::Client {
            what: "input consumer",
            source,
        })?;
    let corrupt_records = if config.restore_skip_corrupt {
        CorruptRecordPolicy::Skip
    } else {
        CorruptRecordPolicy::Fail
    };
    let mut restore = RestoreReader::new(
        &config.bootstrap,
        &RestoreOptions {
            corrupt_records,
            read_committed: config.exactly_once,
            consumer_config: config.kafka.clone(),
            retention: Some(config.store_retention),
            ..RestoreOptions::default()
        },
        changelog_topic.clone(),
    )
    .map_err(|source| RuntimeError::Changelog {
        task: "restore".into(),
        source: Box::new(source),
    })?;
    let topology = session_count_topology(
        &config.input_topic,
        &changelog_topic,
        &changelog_topic_configs(config.store_retention),
    );
    let (driver, mut events) = MembershipDriver::spawn(DriverConfig {
        bootstrap: config.bootstrap.clone(),
        connection: connection.clone(),
        membership: MembershipConfig {
            group_id: config.application_id.clone(),
            member_id: config.member_id.clone(),
            process_id: config.process_id.clone(),
            topology,
            rebalance_timeout: Duration::from_secs(300),
            instance_id: None,
            rack_id: None,
        },
    });
    config.status.follow(driver.watch());
    info!(
        application = %config.application_id,
        member = %config.member_id,
        process = %config.process_id,
        guarantee = if config.exactly_once { "exactly_once_v2" } else { "at_least_once" },
        "worker started; joining the streams group"
    );
    let exactly_once = config.exactly_once;
    let mut rt = Runtime {
        manager: TaskManager::new(
            ManagerConfig {
                exactly_once: config.exactly_once,
                commit_interval: config.commit_interval,
                cleanup_delay: config.state_cleanup_delay,
                checkpoint: matches!(config.store_type, crate::store::StoreType::Persistent(_))
                    .then_some(config.checkpoint),
            },
            Instant::now(),
        ),
        offsets: CoordinatorOffsets::new(
            &config.application_id,
            &config.bootstrap,
            connection,
            config.task_timeout,
        ),
        input_topic: Arc::from(config.input_topic.as_str()),
        budget: CacheBudget::new(config.cache_max_bytes),
        config,
        factory,
        producer,
        output_partitions,
        txn,
        txn_config: exactly_once.then_some(producer_cfg),
        peers: BTreeSet::new(),
        driver,
        changelog_topic,
        corrupt_records,
        tasks: BTreeMap::new(),
        dormant: BTreeMap::new(),
        restores: BTreeMap::new(),
        processing: BTreeSet::new(),
        awaiting: VecDeque::new(),
        cycle_started: None,
        left: false,
        handled: 0,
        last_report: Instant::now(),
        last_progress: Instant::now(),
        last_state_cleanup: Instant::now(),
        _state_lock: state_lock,
    };

    tokio::pin!(shutdown);
    let mut shutting_down = false;
    loop {
        // The actions queued now, in order (those they queue come next round): the
        // restores among them capture their ranges together first.
        loop {
            let actions: Vec<Action> = std::iter::from_fn(|| rt.manager.poll_action()).collect();
            if actions.is_empty() {
                break;
            }
            let starts: Vec<(i32, Option<i64>)> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::StartRestore { task, after } => Some((*task, *after)),
                    _ => None,
                })
                .collect();
            restore.prepare(&starts);
            for action in actions {
                rt.execute(action, &consumer, &mut restore).await?;
            }
            restore.unprepare();
        }
        if rt.left {
            break;
        }
        rt.check_deliveries()?;
        if rt.acks_reached() {
            continue;
        }
        let deadline = rt.manager.poll_timeout();
        let running = rt.manager.running_count() > 0;
        let awaiting = !rt.awaiting.is_empty();
        tokio::select! {
            biased;
            _ = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                info!(tasks = rt.tasks.len(), "shutting down: committing and closing every task");
                rt.manager.shutdown(Instant::now());
            }
            event = events.recv() => match event {
                Some(event) => rt.on_event(event).await?,
                None => return Err(RuntimeError::MembershipStopped),
            },
            _ = sleep_until(deadline) => {
                rt.manager.handle_timeout(Instant::now());
                rt.clean_state_dir(Instant::now());
                rt.report(&restore);
                rt.config.status.refresh_lag(&consumer, &rt.config.input_topic);
            }
            _ = rt.producer.notified(), if awaiting => {}
            // Restore and input interleave: whichever woke the loop, the other's ready
            // records get a turn too, so neither starves the other.
            first = restore.recv(), if restore.is_reading() => {
                rt.restore_batch(&restore, first)?;
                if rt.manager.running_count() > 0 {
                    if let Some(first) = consumer.recv().now_or_never() {
                        rt.input_batch(&consumer, first).await?;
                    }
                }
            }
            first = consumer.recv(), if running => {
                rt.input_batch(&consumer, first).await?;
                if restore.is_reading() {
                    if let Some(first) = restore.recv().now_or_never() {
                        rt.restore_batch(&restore, first)?;
                    }
                }
            }
        }
    }
    info!("left the streams group; shutdown complete");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RuntimeConfig {
        RuntimeConfig {
            application_id: "app".into(),
            bootstrap: "127.0.0.1:1".into(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            store_name: "counts".into(),
            store_type: crate::store::StoreType::InMemory,
            store_retention: Duration::from_secs(60),
            commit_interval: Duration::from_secs(1),
            cache_max_bytes: 0,
            exactly_once: false,
            process_id: "p".into(),
            member_id: "m".into(),
            input_errors: InputErrorPolicy::Fail,
            restore_skip_corrupt: false,
            kafka: KafkaProperties::new(),
            leave_timeout: Duration::from_secs(1),
            state_dir: std::env::temp_dir().join(format!("kstate-run-{}", uuid::Uuid::new_v4())),
            state_cleanup_delay: Duration::from_secs(600),
            task_timeout: Duration::from_secs(1),
            checkpoint: super::super::CheckpointPolicy::DEFAULT,
            status: super::super::StatusBoard::new(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_current_thread_runtime_is_refused_with_a_clear_error() {
        let windows =
            crate::session::SessionWindows::new(Duration::from_millis(10), Duration::ZERO, None)
                .unwrap();
        let err = run(
            config(),
            Arc::new(super::super::count_factory(windows)),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RuntimeError::CurrentThreadRuntime), "{err}");
        assert!(err.to_string().contains("multi-thread"), "{err}");
    }

    #[test]
    fn the_transaction_timeout_defaults_to_kafka_streams_and_can_be_set() {
        let mut c = config();
        assert_eq!(transaction_timeout(&c), Duration::from_secs(10));
        c.kafka.push("transaction.timeout.ms", "60000");
        assert_eq!(transaction_timeout(&c), Duration::from_secs(60));
    }
}
