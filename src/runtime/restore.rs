//! Restore inside the poll loop: one consumer over the changelog partitions of every
//! restoring and standby task. [`RestoreReader::start`] captures a partition's end and
//! assigns it at the task's position (a restore from scratch starts where Kafka Streams
//! 4.4.0 starts it, within the store's retention of the last record:
//! [`Restorer::retention_start`]); the loop awaits [`RestoreReader::recv`] beside the
//! input and applies each batch below the task's cache. The end reached (or, past
//! transaction markers, the position) is reported to the task manager, which decides when
//! a restore is done. Knows nothing of task states.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::changelog::{leader_unavailable, ChangelogError, RestoreOptions, Restorer};

mod queue;

pub(super) use queue::ChangelogRecord;
use queue::{BatchQueue, Polled};

/// Records applied per wake-up before the loop looks at input, events and commits again.
pub(super) const RESTORE_BATCH: usize = 10_000;

/// Where a restore of one partition starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RestoreRange {
    /// The last offset the store holds (`None`: nothing) after the start was decided.
    pub(super) position: Option<i64>,
    /// The first offset read.
    pub(super) start: i64,
    /// The exclusive end captured now.
    pub(super) end: i64,
    /// Whether the store must be cleared first (no usable position).
    pub(super) full: bool,
}

/// The start of a restore of a partition spanning `[log_start, end)` for a store holding
/// the changelog up to `after`. A position outside the log (below its start after
/// compaction or retention, or past its end) means a full restore.
pub(super) fn range(after: Option<i64>, log_start: i64, end: i64) -> RestoreRange {
    match after {
        Some(c) if c + 1 >= log_start && c < end => RestoreRange {
            position: Some(c),
            start: c + 1,
            end,
            full: false,
        },
        _ => RestoreRange {
            position: (log_start > 0).then_some(log_start - 1),
            start: log_start,
            end,
            full: true,
        },
    }
}

pub(super) struct RestoreReader {
    consumer: StreamConsumer,
    /// The consumer's queue, drained in batches after the first record of a wake-up.
    queue: BatchQueue,
    topic: String,
    assigned: usize,
    bootstrap: String,
    options: RestoreOptions,
    /// Reads the last record's timestamp and looks up offsets by time for a restore from
    /// scratch with a retention; created on first use.
    lookup: Option<Restorer>,
    /// Ranges [`prepare`](Self::prepare) found, by partition, with the `after` they are for.
    prepared: HashMap<i32, (Option<i64>, RestoreRange)>,
}

/// One thing the reader saw.
pub(super) enum Restored<'a> {
    Record(ChangelogRecord<'a>),
    /// The partition's end was reached; the position is the next offset to read.
    End {
        partition: i32,
        position: i64,
    },
}

impl RestoreReader {
    pub(super) fn new(
        bootstrap: &str,
        options: &RestoreOptions,
        topic: String,
    ) -> Result<Self, ChangelogError> {
        let consumer = Restorer::consumer_config(bootstrap, options)
            .create()
            .map_err(|source| ChangelogError::Client { source })?;
        let queue = BatchQueue::new(&consumer).ok_or_else(|| ChangelogError::Client {
            source: KafkaError::ClientCreation("the restore consumer has no queue".into()),
        })?;
        Ok(Self {
            consumer,
            queue,
            topic,
            assigned: 0,
            bootstrap: bootstrap.to_string(),
            options: options.clone(),
            lookup: None,
            prepared: HashMap::new(),
        })
    }

    pub(super) fn is_reading(&self) -> bool {
        self.assigned > 0
    }

    fn consume_error(&self, partition: i32, source: KafkaError) -> ChangelogError {
        ChangelogError::Consume {
            topic: self.topic.clone(),
            partition,
            source,
        }
    }

    /// Captures the ends of the partitions of `starts` (`(partition, after)`, as
    /// [`start`](Self::start) takes them) at once, their watermarks looked up side by side
    /// and, for restores from scratch with a retention, their retention starts in one
    /// [`Restorer::retention_starts`]: a member given many tasks waited for these round
    /// trips one partition after another while the first restores' records queued up. A
    /// later `start` of the same `(partition, after)` takes the range found here; a
    /// partition whose lookup failed is looked up again (and its error reported) there.
    pub(super) fn prepare(&mut self, starts: &[(i32, Option<i64>)]) {
        self.prepared.clear();
        if starts.len() < 2 {
            return;
        }
        let ranges: Vec<(i32, Option<i64>, RestoreRange)> = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let lookups: Vec<_> = starts
                    .iter()
                    .map(|&(partition, after)| {
                        let consumer = &self.consumer;
                        let topic = self.topic.as_str();
                        scope.spawn(move || {
                            consumer
                                .fetch_watermarks(topic, partition, Duration::from_secs(30))
                                .map(|(log_start, end)| {
                                    (partition, after, range(after, log_start, end))
                                })
                        })
                    })
                    .collect();
                lookups
                    .into_iter()
                    .filter_map(|lookup| lookup.join().ok()?.ok())
                    .collect()
            })
        });
        let mut ranges = ranges;
        if let Some(retention) = self.options.retention {
            let full: Vec<(i32, i64, i64)> = ranges
                .iter()
                .filter(|(_, _, r)| r.full)
                .map(|&(p, _, r)| (p, r.start, r.end))
                .collect();
            if !full.is_empty() {
                let topic = self.topic.clone();
                let found = tokio::task::block_in_place(|| {
                    self.lookup()
                        .and_then(|l| l.retention_starts(&topic, &full, retention))
                });
                match found {
                    Ok(found) => {
                        for (&(p, _, _), start) in full.iter().zip(found) {
                            if let Some((_, _, r)) = ranges.iter_mut().find(|(q, _, _)| *q == p) {
                                *r = RestoreRange {
                                    position: (start > 0).then_some(start - 1),
                                    start,
                                    ..*r
                                };
                            }
                        }
                    }
                    Err(e) => {
                        warn!(
                            error = &e as &dyn std::error::Error,
                            "looking up where restores start; each is looked up again"
                        );
                        ranges.retain(|(_, _, r)| !r.full);
                    }
                }
            }
        }
        self.prepared = ranges.into_iter().map(|(p, a, r)| (p, (a, r))).collect();
    }

    /// Forgets what [`prepare`](Self::prepare) found and no `start` took.
    pub(super) fn unprepare(&mut self) {
        self.prepared.clear();
    }

    /// The restorer that looks restore starts up by time, created on first use.
    fn lookup(&mut self) -> Result<&Restorer, ChangelogError> {
        if self.lookup.is_none() {
            self.lookup = Some(Restorer::new(&self.bootstrap, self.options.clone())?);
        }
        Ok(self.lookup.as_ref().expect("created above"))
    }

    /// Captures the end of `partition` (the last stable offset under read_committed) and
    /// assigns it from after `after`. Blocks for one ListOffsets round trip; a restore from
    /// scratch with a retention also reads the last record and looks its start up by time.
    /// A range [`prepare`](Self::prepare) found for the same `(partition, after)` is taken
    /// instead.
    pub(super) fn start(
        &mut self,
        partition: i32,
        after: Option<i64>,
    ) -> Result<RestoreRange, ChangelogError> {
        let range = match self.prepared.remove(&partition) {
            Some((prepared_after, range)) if prepared_after == after => range,
            _ => self.look_up(partition, after)?,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(range.start))
            .map_err(|e| self.consume_error(partition, e))?;
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| self.consume_error(partition, e))?;
        self.assigned += 1;
        Ok(range)
    }

    /// The range of a restore of `partition` from after `after`, looked up now.
    fn look_up(
        &mut self,
        partition: i32,
        after: Option<i64>,
    ) -> Result<RestoreRange, ChangelogError> {
        // A broker that was unreachable or paused answers for a moment without a leader for
        // the partition: retried for up to 30 s, as the changelog restorer does.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (log_start, end) = tokio::task::block_in_place(|| loop {
            match self
                .consumer
                .fetch_watermarks(&self.topic, partition, Duration::from_secs(30))
            {
                Err(source) if leader_unavailable(&source) && Instant::now() < deadline => {
                    warn!(topic = %self.topic, partition, error = %source, "no leader for the changelog partition yet; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        })
        .map_err(|source| ChangelogError::Offsets {
            topic: self.topic.clone(),
            partition,
            source,
        })?;
        let range = range(after, log_start, end);
        let (true, Some(retention)) = (range.full, self.options.retention) else {
            return Ok(range);
        };
        let start = tokio::task::block_in_place(|| {
            let topic = self.topic.clone();
            self.lookup()?
                .retention_start(&topic, partition, log_start, end, retention)
        })?;
        Ok(RestoreRange {
            position: (start > 0).then_some(start - 1),
            start,
            ..range
        })
    }

    pub(super) fn stop(&mut self, partition: i32) -> Result<(), ChangelogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        self.consumer
            .incremental_unassign(&tpl)
            .map_err(|e| self.consume_error(partition, e))?;
        self.assigned = self.assigned.saturating_sub(1);
        Ok(())
    }

    /// The end of a partition being read as of its last fetch (for a standby's lag); sends
    /// no request.
    pub(super) fn cached_end(&self, partition: i32) -> Option<i64> {
        let topic = std::ffi::CString::new(self.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client handle is valid for the whole call (borrowed from the live
        // consumer), the topic is a NUL-terminated string that outlives it, and the out
        // pointers are locals.
        let err = unsafe {
            rdkafka_sys::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high)
    }

    /// The next record or end event of any partition being read.
    pub(super) async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        self.consumer.recv().await
    }

    /// Hands `first` and up to [`RESTORE_BATCH`] more records that are ready (for at most
    /// 50 ms, the clock read once per [`BatchQueue::drain`] of up to 512) to `f`; returns
    /// how many records it handed over.
    pub(super) fn batch(
        &self,
        first: KafkaResult<BorrowedMessage<'_>>,
        f: &mut dyn FnMut(Restored<'_>) -> Result<(), ChangelogError>,
    ) -> Result<usize, ChangelogError> {
        let deadline = Instant::now() + Duration::from_millis(50);
        let n = Cell::new(0);
        let reachable = Cell::new(true);
        let mut handle = |item: Polled<'_>| match item {
            Polled::Record(record) => {
                n.set(n.get() + 1);
                f(Restored::Record(record))
            }
            Polled::End {
                partition,
                position,
            } => f(Restored::End {
                partition,
                position,
            }),
            Polled::Error(e) if super::events::broker_unreachable(&e) => {
                warn!(error = %e, "the broker is unreachable; the restore consumer reconnects");
                reachable.set(false);
                Ok(())
            }
            Polled::Error(e) => Err(self.consume_error(-1, e)),
        };
        handle(match &first {
            Ok(msg) => Polled::Record(ChangelogRecord {
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key(),
                value: msg.payload(),
            }),
            // Transaction markers and aborted records take offsets that no record is
            // delivered for: the position, not the last record, tells the end.
            Err(KafkaError::PartitionEOF(partition)) => Polled::End {
                partition: *partition,
                position: self.position(*partition)?,
            },
            Err(e) => Polled::Error(e.clone()),
        })?;
        drop(first);
        let mut taken = 1;
        while reachable.get() && taken < RESTORE_BATCH && Instant::now() < deadline {
            let got = self.queue.drain(RESTORE_BATCH - taken, &mut handle)?;
            if got == 0 {
                break;
            }
            taken += got;
        }
        Ok(n.get())
    }

    fn position(&self, partition: i32) -> Result<i64, ChangelogError> {
        let tpl = self
            .consumer
            .position()
            .map_err(|e| self.consume_error(partition, e))?;
        Ok(tpl
            .find_partition(&self.topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(-1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_resumes_after_a_position_inside_the_log_else_restores_it_all() {
        let tail = range(Some(41), 0, 50);
        assert_eq!(
            (tail.start, tail.position, tail.full),
            (42, Some(41), false)
        );
        let caught_up = range(Some(49), 0, 50);
        assert_eq!((caught_up.start, caught_up.full), (50, false));
        for outside in [Some(50), Some(5)] {
            let full = range(outside, 10, 50);
            assert_eq!(
                (full.start, full.position, full.full),
                (10, Some(9), true),
                "{outside:?}"
            );
        }
        let fresh = range(None, 0, 50);
        assert_eq!((fresh.start, fresh.position, fresh.full), (0, None, true));
    }
}
