//! Restore: replays one changelog partition into a store, below its cache, before the task
//! processes a record. Owns the restore loop (start offset from the checkpoint, or for a
//! restore from scratch where Kafka Streams 4.4.0 starts it, end offset captured once at the
//! start, progress reporting, the corrupt-record policy). Blocking: it drives an rdkafka `BaseConsumer`, so async callers run it on a
//! blocking thread. Knows nothing of tasks or of how the store lays out its keys; the target
//! decides what a corrupt key is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::ChangelogError;
use crate::protocol::KafkaProperties;

mod retention;

/// What a restore writes into: the store's `put_inner`/`delete_inner`/`clear`.
pub trait RestoreTarget {
    /// Why a record could not be applied (e.g. a key that is not a session key).
    type Error: std::error::Error + Send + Sync + 'static;
    fn restore_put(&mut self, key: Bytes, value: Bytes) -> Result<(), Self::Error>;
    fn restore_delete(&mut self, key: Bytes) -> Result<(), Self::Error>;
    fn restore_clear(&mut self) -> Result<(), Self::Error>;
}

/// What to do with a changelog record the target rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptRecordPolicy {
    /// Fail the restore (and with it the task) with [`ChangelogError::CorruptRecord`].
    #[default]
    Fail,
    /// Skip the record, count it in [`RestoreOutcome::skipped`] and log a warning.
    Skip,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub corrupt_records: CorruptRecordPolicy,
    /// Read only committed records and take the last stable offset as the end (EOS).
    pub read_committed: bool,
    /// Minimum time between progress callbacks and log lines.
    pub progress_interval: Duration,
    /// Give up when no record arrives for this long although the end is not reached.
    pub stall_timeout: Duration,
    /// Extra librdkafka settings (security); `Debug` redacts secrets.
    pub consumer_config: KafkaProperties,
    /// The store's retention. With it, a restore from scratch skips the changelog records
    /// stamped before (the last record's timestamp - retention), as Kafka Streams 4.4.0's
    /// `StoreChangelogReader` does for windowed and session stores (see
    /// [`Restorer::restore`]); `None` replays the whole log.
    pub retention: Option<Duration>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            corrupt_records: CorruptRecordPolicy::Fail,
            read_committed: false,
            progress_interval: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(120),
            consumer_config: KafkaProperties::new(),
            retention: None,
        }
    }
}

/// A progress report: `restored` of `total` records, at `records_per_sec`.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreProgress {
    pub topic: String,
    pub partition: i32,
    /// The first changelog offset this restore reads.
    pub start: i64,
    /// The end offset captured when the restore started (exclusive).
    pub end: i64,
    pub restored: u64,
    pub total: u64,
    pub records_per_sec: f64,
    pub done: bool,
}

/// How a restore went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// First offset read.
    pub start_offset: i64,
    /// End offset captured when the restore started (exclusive).
    pub end_offset: i64,
    /// Records applied (puts and deletes).
    pub applied: u64,
    /// Records the target rejected and the `Skip` policy skipped.
    pub skipped: u64,
    /// Offset of the last record read (the new checkpoint), or the checkpoint given.
    pub last_offset: Option<i64>,
    /// Whether the store was cleared and restored from scratch (from the log start, or with
    /// a retention, from the first record within it).
    pub full_restore: bool,
    pub elapsed: Duration,
}

/// Errors of a watermark lookup that a broker coming back (or a leader moving) clears.
pub(crate) fn leader_unavailable(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::UnknownPartition
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::NetworkException
        )
    )
}

/// Replays changelog partitions. One restorer can restore many partitions in turn.
pub struct Restorer {
    consumer: BaseConsumer,
    options: RestoreOptions,
    cancel: Arc<AtomicBool>,
}

impl Restorer {
    pub fn new(bootstrap: &str, options: RestoreOptions) -> Result<Self, ChangelogError> {
        let config = Self::consumer_config(bootstrap, &options);
        let consumer = config
            .create()
            .map_err(|source| ChangelogError::Client { source })?;
        Ok(Self {
            consumer,
            options,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The librdkafka settings of the restore consumer: large fetches, a deep prefetch
    /// queue, partition EOF events, the isolation level of `options`, then
    /// `options.consumer_config`. Public so a benchmark can read a partition with exactly
    /// the same settings.
    pub fn consumer_config(bootstrap: &str, options: &RestoreOptions) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "kstate-restore")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "16777216")
            .set("queued.max.messages.kbytes", "262144")
            // Once a partition's fetch queue holds queued.min.messages (100,000) librdkafka
            // fetches it again only after this long (default 1 s); a restore drains that
            // in well under a second and then waited out the rest. Measured on the bench's
            // restore of 0.8M records (BENCHMARKS.md).
            .set("fetch.queue.backoff.ms", "10")
            // At the end of a partition the broker answers after this long at most: a task
            // restored second does not wait out the default 500 ms there.
            .set("fetch.wait.max.ms", "50")
            .set(
                "isolation.level",
                if options.read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        for (k, v) in &options.consumer_config {
            config.set(k, v);
        }
        config
    }

    /// A flag that makes a running restore (and every later one of this restorer) stop with
    /// [`ChangelogError::Cancelled`]: the task was revoked or lost mid-restore.
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Whether the cluster metadata lists `topic` (an unreachable broker counts as yes: the
    /// caller retries until its deadline).
    fn topic_exists(&self, topic: &str) -> bool {
        match self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            Ok(metadata) => metadata.topics().iter().any(|t| {
                t.name() == topic
                    && t.error()
                        != Some(
                            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                        )
            }),
            Err(_) => true,
        }
    }

    /// `(log start, end)` of a partition: the end is the high watermark, or the last stable
    /// offset under `read_committed`.
    /// A broker that was unreachable or paused answers for a moment without a leader for
    /// the partition; that is retried for up to 30 s (unless the restore is cancelled or the
    /// topic does not exist).
    pub fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), ChangelogError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(30))
            {
                Ok(offsets) => return Ok(offsets),
                Err(source)
                    if leader_unavailable(&source)
                        && Instant::now() < deadline
                        && !self.cancel.load(Ordering::Acquire)
                        && self.topic_exists(topic) =>
                {
                    warn!(topic, partition, error = %source, "no leader for the changelog partition yet; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(source) => {
                    return Err(ChangelogError::Offsets {
                        topic: topic.to_string(),
                        partition,
                        source,
                    })
                }
            }
        }
    }

    /// Restores `topic`/`partition` into `target`, starting after `checkpoint` (the last
    /// applied offset), up to the end offset captured now. Records produced after that
    /// capture are not applied. Without a checkpoint, or with one outside the log (below its
    /// start after compaction or retention, or past its end), the target is cleared and
    /// restored from scratch: from the log start, or with [`RestoreOptions::retention`] from
    /// where Kafka Streams 4.4.0 starts (see [`Restorer::retention_start`]).
    pub fn restore<T: RestoreTarget>(
        &self,
        topic: &str,
        partition: i32,
        checkpoint: Option<i64>,
        target: &mut T,
        progress: &mut dyn FnMut(&RestoreProgress),
    ) -> Result<RestoreOutcome, ChangelogError> {
        let started = Instant::now();
        let (log_start, end) = self.offsets(topic, partition)?;
        let (start, full_restore) =
            match checkpoint {
                Some(c) if c + 1 >= log_start && c < end => (c + 1, false),
                Some(c) => {
                    warn!(
                    topic, partition, checkpoint = c, log_start, end,
                    "checkpoint is outside the changelog; clearing the store for a full restore"
                );
                    (log_start, true)
                }
                None => (log_start, true),
            };
        let start = match self.options.retention {
            Some(retention) if full_restore => {
                self.retention_start(topic, partition, log_start, end, retention)?
            }
            _ => start,
        };
        if full_restore {
            target
                .restore_clear()
                .map_err(|e| ChangelogError::ClearStore {
                    topic: topic.to_string(),
                    partition,
                    source: Box::new(e),
                })?;
        }
        let mut outcome = RestoreOutcome {
            start_offset: start,
            end_offset: end,
            applied: 0,
            skipped: 0,
            last_offset: if full_restore { None } else { checkpoint },
            full_restore,
            elapsed: Duration::ZERO,
        };
        let total = u64::try_from(end - start).unwrap_or(0);
        let mut report = |outcome: &RestoreOutcome, done: bool| {
            let secs = started.elapsed().as_secs_f64();
            let restored = outcome.applied + outcome.skipped;
            let p = RestoreProgress {
                topic: topic.to_string(),
                partition,
                start,
                end,
                restored,
                total,
                records_per_sec: if secs > 0.0 {
                    restored as f64 / secs
                } else {
                    0.0
                },
                done,
            };
            info!(
                topic,
                partition,
                restored,
                total,
                rate = format!("{:.0}/s", p.records_per_sec),
                done,
                "restore progress"
            );
            progress(&p);
        };
        if start >= end {
            outcome.elapsed = started.elapsed();
            report(&outcome, true);
            return Ok(outcome);
        }

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(|source| ChangelogError::Consume {
                topic: topic.to_string(),
                partition,
                source,
            })?;
        self.consumer
            .assign(&tpl)
            .map_err(|source| ChangelogError::Consume {
                topic: topic.to_string(),
                partition,
                source,
            })?;
        let result = self.read_until(topic, partition, end, target, &mut outcome, &mut report);
        let _ = self.consumer.unassign();
        result?;
        outcome.elapsed = started.elapsed();
        report(&outcome, true);
        Ok(outcome)
    }

    fn read_until<T: RestoreTarget>(
        &self,
        topic: &str,
        partition: i32,
        end: i64,
        target: &mut T,
        outcome: &mut RestoreOutcome,
        report: &mut dyn FnMut(&RestoreOutcome, bool),
    ) -> Result<(), ChangelogError> {
        let consume_err = |source| ChangelogError::Consume {
            topic: topic.to_string(),
            partition,
            source,
        };
        let mut last_progress = Instant::now();
        let mut last_record = Instant::now();
        loop {
            if self.cancel.load(Ordering::Acquire) {
                return Err(ChangelogError::Cancelled {
                    topic: topic.to_string(),
                    partition,
                    restored: outcome.applied,
                    last_offset: outcome.last_offset,
                });
            }
            if last_progress.elapsed() >= self.options.progress_interval {
                report(outcome, false);
                last_progress = Instant::now();
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    last_record = Instant::now();
                    let offset = msg.offset();
                    // The end was captured at the start: later records belong to the
                    // processing that follows, not to this restore.
                    if offset >= end {
                        return Ok(());
                    }
                    self.apply(topic, partition, &msg, target, outcome)?;
                    outcome.last_offset = Some(offset);
                    if offset + 1 >= end {
                        return Ok(());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    // Transaction markers and aborted records take offsets that no record
                    // is delivered for: the position, not the last record, tells the end.
                    if self.position(topic, partition)? >= end {
                        return Ok(());
                    }
                    if last_record.elapsed() >= self.options.stall_timeout {
                        return Err(ChangelogError::Stalled {
                            topic: topic.to_string(),
                            partition,
                            position: outcome.last_offset.map_or(outcome.start_offset, |o| o + 1),
                            end,
                        });
                    }
                }
                Some(Err(source)) => return Err(consume_err(source)),
            }
        }
    }

    fn position(&self, topic: &str, partition: i32) -> Result<i64, ChangelogError> {
        let tpl = self
            .consumer
            .position()
            .map_err(|source| ChangelogError::Consume {
                topic: topic.to_string(),
                partition,
                source,
            })?;
        Ok(tpl
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(-1))
    }

    fn apply<T: RestoreTarget, M: Message>(
        &self,
        topic: &str,
        partition: i32,
        msg: &M,
        target: &mut T,
        outcome: &mut RestoreOutcome,
    ) -> Result<(), ChangelogError> {
        let applied = apply_record(
            target,
            (topic, partition, msg.offset()),
            msg.key(),
            msg.payload(),
            self.options.corrupt_records,
        )?;
        if applied {
            outcome.applied += 1;
        } else {
            outcome.skipped += 1;
        }
        Ok(())
    }
}

/// Applies one changelog record (`at` = topic, partition, offset) to `target`: a put, or a
/// delete for a tombstone. A record the target rejects, or one without a key, fails under
/// [`CorruptRecordPolicy::Fail`] and is skipped with a warning under `Skip`. Returns whether
/// the record was applied.
pub fn apply_record<T: RestoreTarget>(
    target: &mut T,
    at: (&str, i32, i64),
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    policy: CorruptRecordPolicy,
) -> Result<bool, ChangelogError> {
    let (topic, partition, offset) = at;
    let result = match (key, value) {
        (None, _) => Err(ChangelogError::CorruptRecord {
            topic: topic.to_string(),
            partition,
            offset,
            source: "record has no key".into(),
        }),
        (Some(k), Some(v)) => target
            .restore_put(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))
            .map_err(|e| corrupt(topic, partition, offset, e)),
        (Some(k), None) => target
            .restore_delete(Bytes::copy_from_slice(k))
            .map_err(|e| corrupt(topic, partition, offset, e)),
    };
    match (result, policy) {
        (Ok(()), _) => Ok(true),
        (Err(e), CorruptRecordPolicy::Skip) => {
            warn!(
                error = &e as &dyn std::error::Error,
                "skipping a corrupt changelog record"
            );
            Ok(false)
        }
        (Err(e), CorruptRecordPolicy::Fail) => Err(e),
    }
}

fn corrupt<E: std::error::Error + Send + Sync + 'static>(
    topic: &str,
    partition: i32,
    offset: i64,
    e: E,
) -> ChangelogError {
    ChangelogError::CorruptRecord {
        topic: topic.to_string(),
        partition,
        offset,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;

    use super::leader_unavailable;

    #[test]
    fn a_missing_leader_is_retried_and_a_refusal_is_not() {
        for code in [
            Code::UnknownPartition,
            Code::LeaderNotAvailable,
            Code::AllBrokersDown,
        ] {
            assert!(leader_unavailable(&KafkaError::MetadataFetch(code)));
        }
        for code in [Code::TopicAuthorizationFailed, Code::InvalidConfig] {
            assert!(!leader_unavailable(&KafkaError::MetadataFetch(code)));
        }
    }
}
