//! The poll loop of a worker: membership events turned into task lifecycles, input records
//! handed to their task, and the commit cycle every `commit_interval`, on revocation and on
//! shutdown: flush caches → changelog and output produced → all acknowledged → input
//! offsets committed with the member id and epoch (or, under exactly-once, all of it in one
//! transaction). Owns the order of those steps and the Kafka clients; the rules of session
//! windows live in `session`, the wire in `protocol`, the member state in `membership`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::eos::Transactions;
use super::error::RuntimeError;
use super::metrics;
use super::offsets::{CoordinatorOffsets, OffsetCommitter, OffsetsError};
use super::partitioner::windowed_partition;
use super::processor::{OutputRecord, ProcessError, ProcessorFactory};
use super::task::Task;
use crate::changelog::{
    changelog_topic_configs, changelog_topic_name, producer_config, CorruptRecordPolicy,
    RestoreOptions, Restorer, TrackedProducer,
};
use crate::membership::{
    session_count_topology, DriverConfig, DriverHandle, MembershipConfig, MembershipDriver,
    MembershipEvent, TaskId,
};
use crate::protocol::ConnectionConfig;
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
    /// librdkafka settings for every client (security).
    pub kafka: Vec<(String, String)>,
    /// Bound on the graceful leave at shutdown.
    pub leave_timeout: Duration,
}

/// Broker error codes of an offset commit that mean "these tasks are no longer yours".
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;
/// Records handled per wake-up of the loop before other events get a look in.
const BATCH: usize = 1_000;

struct Runtime {
    config: RuntimeConfig,
    factory: Arc<dyn ProcessorFactory>,
    producer: FutureProducer,
    output: TrackedProducer,
    output_partitions: i32,
    txn: Option<Transactions>,
    offsets: CoordinatorOffsets,
    driver: DriverHandle,
    budget: CacheBudget,
    input_topic: Arc<str>,
    changelog_topic: String,
    tasks: BTreeMap<i32, Task>,
    /// Tasks closed cleanly on revocation, kept with their store so that a later assignment
    /// of the same task restores only the changelog tail.
    dormant: BTreeMap<i32, Task>,
}

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
    let consumer: StreamConsumer = client_config(&config)
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
    let connection = ConnectionConfig::from_properties(
        config.kafka.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| RuntimeError::Metadata {
        topic: config.input_topic.clone(),
        reason: format!("connection settings: {e}"),
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
        output: TrackedProducer::new(producer.clone()),
        config,
        factory,
        producer,
        output_partitions,
        txn,
        driver,
        changelog_topic,
        tasks: BTreeMap::new(),
        dormant: BTreeMap::new(),
    };

    tokio::pin!(shutdown);
    let mut next_commit = tokio::time::Instant::now() + rt.config.commit_interval;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            event = events.recv() => match event {
                Some(event) => rt.handle_event(&consumer, event).await?,
                None => return Err(RuntimeError::MembershipStopped),
            },
            _ = tokio::time::sleep_until(next_commit) => {
                rt.commit_or_lose(&consumer, "interval").await?;
                next_commit = tokio::time::Instant::now() + rt.config.commit_interval;
            }
            first = consumer.recv(), if !rt.tasks.is_empty() => {
                let first = first.map_err(|source| RuntimeError::Consume {
                    topic: rt.config.input_topic.clone(),
                    source,
                })?;
                rt.on_record(&first)?;
                drop(first);
                for _ in 1..BATCH {
                    match consumer.recv().now_or_never() {
                        Some(Ok(msg)) => rt.on_record(&msg)?,
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

impl Runtime {
    fn on_record(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), RuntimeError> {
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
                warn!(task = %task.name, error = %e, "skipping an input record that cannot be deserialized");
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
            task.send_changelog(&records)
                .await
                .map_err(|source| RuntimeError::Changelog {
                    task: task.name.clone(),
                    source: Box::new(source),
                })?;
            send_output(
                &mut self.output,
                &self.config.output_topic,
                self.output_partitions,
                &records,
            )
            .await?;
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        consumer: &StreamConsumer,
        event: MembershipEvent,
    ) -> Result<(), RuntimeError> {
        match event {
            MembershipEvent::Assigned { active, .. } => self.on_assigned(consumer, active).await,
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
                warn!(error = %e, "streams group warning");
                Ok(())
            }
            MembershipEvent::CoordinatorChanged | MembershipEvent::Left => Ok(()),
        }
    }

    async fn on_assigned(
        &mut self,
        consumer: &StreamConsumer,
        active: BTreeSet<TaskId>,
    ) -> Result<(), RuntimeError> {
        let wanted: BTreeSet<i32> = active
            .iter()
            .filter(|t| t.subtopology == "0")
            .map(|t| t.partition)
            .collect();
        let gone: Vec<i32> = self
            .tasks
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.commit_or_lose(consumer, "reassignment").await?;
            self.close(consumer, &gone, true);
        }
        let new: Vec<i32> = wanted
            .into_iter()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        if new.is_empty() {
            metrics::assigned_tasks(self.tasks.len());
            return Ok(());
        }
        let mut created = Vec::with_capacity(new.len());
        for p in &new {
            let task = match self.dormant.remove(p) {
                Some(task) => task,
                None => self.create_task(*p)?,
            };
            created.push(task);
        }
        let created = self.restore(created).await?;
        let partitions: Vec<(String, i32)> = created
            .iter()
            .map(|t| (self.config.input_topic.clone(), t.partition()))
            .collect();
        let committed =
            self.offsets
                .fetch(&partitions)
                .await
                .map_err(|source| RuntimeError::Offsets {
                    source: Box::new(source),
                })?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), c) in partitions.iter().zip(&committed) {
            let offset = c.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(topic, *p, offset)
                .map_err(|source| RuntimeError::Consume {
                    topic: topic.clone(),
                    source,
                })?;
        }
        consumer
            .incremental_assign(&tpl)
            .map_err(|source| RuntimeError::Consume {
                topic: self.config.input_topic.clone(),
                source,
            })?;
        for (mut task, c) in created.into_iter().zip(committed) {
            if let Some(c) = c {
                task.committed(c);
            }
            info!(task = %task.name, committed = ?c, "task running");
            self.tasks.insert(task.partition(), task);
        }
        metrics::assigned_tasks(self.tasks.len());
        Ok(())
    }

    fn create_task(&self, partition: i32) -> Result<Task, RuntimeError> {
        let id = TaskId {
            subtopology: "0".into(),
            partition,
        };
        let processor = self
            .factory
            .create(&self.config.store_name, self.budget.clone())
            .map_err(|source| RuntimeError::Process {
                task: id.to_string(),
                source: Box::new(source),
            })?;
        Ok(Task::new(
            id,
            self.input_topic.clone(),
            processor,
            self.producer.clone(),
            self.changelog_topic.clone(),
            None,
        ))
    }

    /// Restores new tasks on a blocking thread; heartbeats go on meanwhile.
    async fn restore(&self, mut tasks: Vec<Task>) -> Result<Vec<Task>, RuntimeError> {
        let options = RestoreOptions {
            corrupt_records: if self.config.restore_skip_corrupt {
                CorruptRecordPolicy::Skip
            } else {
                CorruptRecordPolicy::Fail
            },
            read_committed: self.config.exactly_once,
            consumer_config: self.config.kafka.clone(),
            ..RestoreOptions::default()
        };
        let bootstrap = self.config.bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            let restorer =
                Restorer::new(&bootstrap, options).map_err(|source| RuntimeError::Changelog {
                    task: "restore".into(),
                    source: Box::new(source),
                })?;
            for task in &mut tasks {
                let name = task.name.clone();
                task.restore(&restorer, &mut |p| metrics::restore_progress(&name, p))
                    .map_err(|source| RuntimeError::Changelog {
                        task: name.clone(),
                        source: Box::new(source),
                    })?;
            }
            Ok(tasks)
        })
        .await
        .map_err(|e| RuntimeError::RestoreJoin {
            reason: e.to_string(),
        })?
    }

    /// Closes `partitions`' tasks: cleanly (kept dormant with their store) after a commit,
    /// or dirty (dropped).
    fn close(&mut self, consumer: &StreamConsumer, partitions: &[i32], clean: bool) {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            if let Some(mut task) = self.tasks.remove(p) {
                tpl.add_partition(&self.config.input_topic, *p);
                if clean {
                    info!(task = %task.name, changelog_offset = ?task.changelog_offset(), "task closed");
                    self.dormant.insert(*p, task);
                } else {
                    task.abandon();
                    info!(task = %task.name, "task closed dirty");
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.incremental_unassign(&tpl) {
                warn!(error = %e, "unassigning input partitions");
            }
        }
        metrics::assigned_tasks(self.tasks.len());
    }

    fn lose_all(&mut self, consumer: &StreamConsumer) {
        let all: Vec<i32> = self.tasks.keys().copied().collect();
        self.close(consumer, &all, false);
        self.output.abandon();
        if let Some(txn) = self.txn.as_mut() {
            if let Err(e) = txn.abort() {
                warn!(error = %e, "aborting the transaction of lost tasks");
            }
        }
    }

    /// Commits; a commit the group refuses because the tasks moved loses them instead.
    async fn commit_or_lose(
        &mut self,
        consumer: &StreamConsumer,
        reason: &str,
    ) -> Result<(), RuntimeError> {
        match self.commit(reason).await {
            Err(RuntimeError::Offsets { source })
                if matches!(
                    *source,
                    OffsetsError::CommitRefused {
                        code: UNKNOWN_MEMBER_ID
                            | ILLEGAL_GENERATION
                            | FENCED_MEMBER_EPOCH
                            | STALE_MEMBER_EPOCH,
                        ..
                    }
                ) =>
            {
                warn!(error = %source, "the group refused the offset commit: tasks migrated, closing them dirty");
                self.lose_all(consumer);
                Ok(())
            }
            Err(RuntimeError::Transaction {
                abortable: true,
                message,
                ..
            }) => {
                warn!(%message, "transaction failed: aborting it and closing the tasks dirty");
                self.lose_all(consumer);
                Ok(())
            }
            other => other,
        }
    }

    /// The commit cycle of every task.
    async fn commit(&mut self, reason: &str) -> Result<(), RuntimeError> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut produced = 0u64;
        for task in self.tasks.values_mut() {
            let records = task.flush().map_err(|source| RuntimeError::Process {
                task: task.name.clone(),
                source: Box::new(source),
            })?;
            if records.is_empty() {
                continue;
            }
            if let Some(txn) = self.txn.as_mut() {
                txn.begin()?;
            }
            produced += records.len() as u64;
            task.send_changelog(&records)
                .await
                .map_err(|source| RuntimeError::Changelog {
                    task: task.name.clone(),
                    source: Box::new(source),
                })?;
            send_output(
                &mut self.output,
                &self.config.output_topic,
                self.output_partitions,
                &records,
            )
            .await?;
        }
        for task in self.tasks.values_mut() {
            task.flush_changelog()
                .await
                .map_err(|source| RuntimeError::Changelog {
                    task: task.name.clone(),
                    source: Box::new(source),
                })?;
        }
        self.output
            .flush()
            .await
            .map_err(|source| RuntimeError::Output {
                topic: self.config.output_topic.clone(),
                source: Box::new(source),
            })?;
        let offsets: Vec<(String, i32, i64)> = self
            .tasks
            .values()
            .filter_map(|t| {
                t.offset_to_commit()
                    .map(|o| (self.config.input_topic.clone(), t.partition(), o))
            })
            .collect();
        let (member_id, epoch) = self.driver.member();
        match self.txn.as_mut() {
            Some(txn) => txn.commit(&offsets, &member_id, epoch)?,
            None if !offsets.is_empty() => self
                .offsets
                .commit(&member_id, epoch, &offsets)
                .await
                .map_err(|source| RuntimeError::Offsets {
                source: Box::new(source),
            })?,
            None => {}
        }
        for (_, p, o) in &offsets {
            if let Some(t) = self.tasks.get_mut(p) {
                t.committed(*o);
            }
        }
        let elapsed = started.elapsed();
        metrics::commit_latency(elapsed.as_secs_f64());
        metrics::produced("changelog", produced);
        metrics::produced("output", produced);
        let mut cache = crate::store::CacheMetrics::default();
        for t in self.tasks.values_mut() {
            let m = t.cache_metrics();
            cache.hits += m.hits;
            cache.misses += m.misses;
            cache.evictions += m.evictions;
        }
        metrics::cache(cache);
        debug!(
            reason,
            produced,
            offsets = offsets.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "committed"
        );
        Ok(())
    }

    async fn shutdown(mut self, consumer: &StreamConsumer) -> Result<(), RuntimeError> {
        let started = Instant::now();
        info!(
            tasks = self.tasks.len(),
            "shutting down: committing and closing every task"
        );
        self.commit_or_lose(consumer, "shutdown").await?;
        let all: Vec<i32> = self.tasks.keys().copied().collect();
        self.close(consumer, &all, true);
        let left = self.driver.leave(self.config.leave_timeout).await;
        info!(
            ?left,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "left the streams group; shutdown complete"
        );
        Ok(())
    }
}

async fn send_output(
    output: &mut TrackedProducer,
    topic: &str,
    partitions: i32,
    records: &[OutputRecord],
) -> Result<(), RuntimeError> {
    for r in records {
        let partition = windowed_partition(r.inner_key(), partitions);
        output
            .send(
                topic,
                partition,
                &r.key,
                r.value.as_deref(),
                r.output_timestamp,
            )
            .await
            .map_err(|source| RuntimeError::Output {
                topic: topic.to_string(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}
