//! The poll loop of a worker: membership events turned into task lifecycles, input records
//! handed to their task, and the commit cycle every `commit_interval`, on revocation and on
//! shutdown: flush caches → changelog and output produced → all acknowledged → input
//! offsets committed with the member id and epoch (or, under exactly-once, all of it in one
//! transaction). Owns the order of those steps and the Kafka clients; the rules of session
//! windows live in `session`, the wire in `protocol`, the member state in `membership`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::commit::Output;
use super::eos::Transactions;
use super::error::RuntimeError;
use super::metrics;
use super::offsets::CoordinatorOffsets;
use super::processor::{ProcessError, ProcessorFactory};
use super::task::Task;
use crate::changelog::{
    changelog_topic_configs, changelog_topic_name, producer_config, TrackedProducer,
};
use crate::membership::{
    session_count_topology, DriverConfig, DriverHandle, MembershipConfig, MembershipDriver,
    MembershipEvent,
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
    /// Where the runtime publishes the member's and the tasks' status (`/readyz`, `/status`).
    pub status: super::status::StatusBoard,
}

/// Broker error codes of an offset commit that mean "these tasks are no longer yours".
/// Records handled per wake-up of the loop before other events get a look in.
const BATCH: usize = 1_000;

pub(super) struct Runtime {
    pub(super) config: RuntimeConfig,
    pub(super) factory: Arc<dyn ProcessorFactory>,
    pub(super) producer: FutureProducer,
    pub(super) output: Output,
    pub(super) txn: Option<Transactions>,
    pub(super) offsets: CoordinatorOffsets,
    pub(super) driver: DriverHandle,
    pub(super) budget: CacheBudget,
    pub(super) input_topic: Arc<str>,
    pub(super) changelog_topic: String,
    pub(super) tasks: BTreeMap<i32, Task>,
    /// Tasks closed cleanly on revocation, kept with their store so that a later assignment
    /// of the same task restores only the changelog tail.
    pub(super) dormant: BTreeMap<i32, Task>,
    /// Membership events that arrived while a restore ran, handled before new ones.
    pub(super) pending: std::collections::VecDeque<MembershipEvent>,
    /// Records handled since the last throughput line, and when that line was logged.
    pub(super) handled: u64,
    pub(super) last_report: Instant,
}

/// How often the loop logs its throughput.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

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

fn client_config(config: &RuntimeConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap);
    for (k, v) in &config.kafka {
        c.set(k, v);
    }
    c
}

fn partition_count(producer: &FutureProducer, topic: &str) -> Result<i32, RuntimeError> {
    use rdkafka::producer::Producer;
    let metadata = tokio::task::block_in_place(|| {
        producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
    })
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

/// Runs a worker until `shutdown` resolves: joins the streams group, processes its tasks,
/// and on shutdown commits, closes every task and leaves the group.
pub async fn run(
    config: RuntimeConfig,
    factory: Arc<dyn ProcessorFactory>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let changelog_topic = changelog_topic_name(&config.application_id, &config.store_name);
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
    let mut producer_cfg = producer_config(&config.bootstrap, &config.kafka);
    if config.exactly_once {
        producer_cfg
            .set(
                "transactional.id",
                format!("{}-{}", config.application_id, config.process_id),
            )
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", "60000");
    }
    let producer: FutureProducer =
        producer_cfg
            .create()
            .map_err(|source| RuntimeError::Client {
                what: "producer",
                source,
            })?;
    let output_partitions = partition_count(&producer, &config.output_topic)?;
    let txn = if config.exactly_once {
        Some(Transactions::init(
            producer.clone(),
            &config.application_id,
            Duration::from_secs(60),
        )?)
    } else {
        None
    };
    let mut consumer_cfg = client_config(&config);
    if !config
        .kafka
        .pairs()
        .any(|(k, _)| k == "topic.metadata.refresh.interval.ms")
    {
        consumer_cfg.set(
            "topic.metadata.refresh.interval.ms",
            INPUT_METADATA_REFRESH_MS,
        );
    }
    let consumer: StreamConsumer = consumer_cfg
        .set(
            "group.id",
            format!("{}-kstate-input", config.application_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
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
    let mut rt = Runtime {
        offsets: CoordinatorOffsets::new(&config.application_id, &config.bootstrap, connection),
        input_topic: Arc::from(config.input_topic.as_str()),
        budget: CacheBudget::new(config.cache_max_bytes),
        output: Output {
            producer: TrackedProducer::new(producer.clone()),
            topic: config.output_topic.clone(),
            partitions: output_partitions,
        },
        config,
        factory,
        producer,
        txn,
        driver,
        changelog_topic,
        tasks: BTreeMap::new(),
        dormant: BTreeMap::new(),
        pending: std::collections::VecDeque::new(),
        handled: 0,
        last_report: Instant::now(),
    };

    tokio::pin!(shutdown);
    let mut next_commit = tokio::time::Instant::now() + rt.config.commit_interval;
    loop {
        while let Some(event) = rt.pending.pop_front() {
            rt.handle_event(&consumer, &mut events, event).await?;
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            event = events.recv() => match event {
                Some(event) => rt.handle_event(&consumer, &mut events, event).await?,
                None => return Err(RuntimeError::MembershipStopped),
            },
            _ = tokio::time::sleep_until(next_commit) => {
                rt.commit_or_lose(&consumer, "interval").await?;
                rt.config.status.refresh_lag(&consumer, &rt.config.input_topic);
                next_commit = tokio::time::Instant::now() + rt.config.commit_interval;
                rt.report_throughput();
            }
            first = consumer.recv(), if !rt.tasks.is_empty() => {
                let first = match first {
                    Ok(first) => first,
                    Err(source) if broker_unreachable(&source) => {
                        warn!(error = %source, "the broker is unreachable; the consumer reconnects");
                        continue;
                    }
                    Err(source) => return Err(RuntimeError::Consume {
                        topic: rt.config.input_topic.clone(),
                        source,
                    }),
                };
                rt.on_record(&first)?;
                drop(first);
                for _ in 1..BATCH {
                    match consumer.recv().now_or_never() {
                        Some(Ok(msg)) => rt.on_record(&msg)?,
                        Some(Err(source)) if broker_unreachable(&source) => break,
                        Some(Err(source)) => return Err(RuntimeError::Consume {
                            topic: rt.config.input_topic.clone(),
                            source,
                        }),
                        None => break,
                    }
                }
                rt.forward_evicted().await?;
            }
        }
    }
    rt.shutdown(&consumer).await
}

/// A consumer error librdkafka reports while it reconnects on its own (the broker restarts,
/// or stops answering): not fatal, the consumer resumes where it was once it is back.
fn broker_unreachable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    matches!(
        error,
        KafkaError::MessageConsumption(
            Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::NetworkException
                | Code::RequestTimedOut
                | Code::OperationTimedOut
        )
    )
}

impl Runtime {
    fn report_throughput(&mut self) {
        let elapsed = self.last_report.elapsed();
        if elapsed < REPORT_INTERVAL {
            return;
        }
        if self.handled > 0 {
            info!(
                records = self.handled,
                rate = format!("{:.0}/s", self.handled as f64 / elapsed.as_secs_f64()),
                tasks = self.tasks.len(),
                "processing"
            );
        }
        self.handled = 0;
        self.last_report = Instant::now();
    }

    fn on_record(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        self.handled += 1;
        let Some(task) = self.tasks.get_mut(&msg.partition()) else {
            debug!(
                partition = msg.partition(),
                "record of a task no longer owned"
            );
            return Ok(());
        };
        if let Some(txn) = self.txn.as_mut() {
            txn.begin()?;
        }
        let timestamp = msg.timestamp().to_millis().unwrap_or(-1);
        let before = task.metrics();
        match task.process(msg.key(), msg.payload(), msg.offset(), timestamp) {
            Ok(_) => {}
            Err(ProcessError::Input(e))
                if self.config.input_errors == InputErrorPolicy::Continue =>
            {
                warn!(task = %task.name, error = &e as &dyn std::error::Error, "skipping an input record that cannot be deserialized");
                metrics::records_skipped("deserialization", 1);
                task.skip(msg.offset());
            }
            Err(source) => {
                return Err(RuntimeError::Process {
                    task: task.name.clone(),
                    source: Box::new(source),
                })
            }
        }
        metrics::aggregate_delta(before, task.metrics());
        Ok(())
    }

    /// Produces what cache evictions wrote through, to the changelog and the output.
    async fn forward_evicted(&mut self) -> Result<(), RuntimeError> {
        for task in self.tasks.values_mut() {
            let records = task
                .take_evicted()
                .map_err(|source| RuntimeError::Process {
                    task: task.name.clone(),
                    source: Box::new(source),
                })?;
            if records.is_empty() {
                continue;
            }
            self.output.forward(task, &records).await?;
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        consumer: &StreamConsumer,
        events: &mut mpsc::Receiver<MembershipEvent>,
        event: MembershipEvent,
    ) -> Result<(), RuntimeError> {
        match event {
            MembershipEvent::Assigned { active, standby } => {
                self.config.status.set_assignment(&active, &standby);
                self.on_assigned(consumer, events, active).await
            }
            MembershipEvent::Revoke { tasks } => {
                let partitions: Vec<i32> = tasks.iter().map(|t| t.partition).collect();
                info!(tasks = ?tasks.iter().map(ToString::to_string).collect::<Vec<_>>(), "revoking tasks: commit and close");
                self.commit_or_lose(consumer, "revocation").await?;
                self.close(consumer, &partitions, true);
                self.driver.tasks_revoked(tasks);
                Ok(())
            }
            MembershipEvent::Lost => {
                warn!(
                    tasks = self.tasks.len(),
                    "all tasks lost (fenced): closing them without a commit"
                );
                self.lose_all(consumer);
                Ok(())
            }
            MembershipEvent::NotReady { statuses } => {
                warn!(?statuses, "the streams group is not ready; waiting");
                Ok(())
            }
            MembershipEvent::Ready => {
                info!("the streams group is ready");
                Ok(())
            }
            MembershipEvent::Fatal(source) => Err(RuntimeError::Membership { source }),
            MembershipEvent::Warning(e) => {
                warn!(
                    error = &e as &dyn std::error::Error,
                    "streams group warning"
                );
                Ok(())
            }
            MembershipEvent::CoordinatorChanged | MembershipEvent::Left => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

    use super::broker_unreachable;

    #[test]
    fn only_reconnection_errors_are_survived() {
        for code in [Code::AllBrokersDown, Code::BrokerTransportFailure] {
            assert!(broker_unreachable(&KafkaError::MessageConsumption(code)));
            assert!(!broker_unreachable(&KafkaError::MessageConsumptionFatal(
                code
            )));
        }
        for code in [
            Code::UnknownTopicOrPartition,
            Code::TopicAuthorizationFailed,
        ] {
            assert!(!broker_unreachable(&KafkaError::MessageConsumption(code)));
        }
    }
}
