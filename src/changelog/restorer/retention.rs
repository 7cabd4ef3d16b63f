//! Where a restore from scratch of a store with a retention starts, as Kafka Streams 4.4.0
//! decides it: from the last changelog record's timestamp minus the retention, looked up by
//! time. [`Restorer::retention_starts`] answers for several partitions at once (their last
//! records read in one assignment, one ListOffsets by time), so that a member given many
//! tasks does not pay the round trips once per partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::info;

use super::Restorer;
use crate::changelog::ChangelogError;

impl Restorer {
    /// Where Kafka Streams 4.4.0 starts restoring a windowed or session store that has no
    /// checkpoint (`StoreChangelogReader.seekByRetentionFromPolledRecords`): it reads the
    /// partition's last offset (`end - 1`); if that is a record (not a transaction marker)
    /// and its timestamp minus the store's retention is positive, it starts at the first
    /// offset stamped at or after that time (ListOffsets by timestamp), else at the log
    /// start. The record timestamp is the time of the input record that last updated the
    /// session, not the session's end, so a session extended backwards by an out-of-order
    /// record can be left out although its end is within retention: kstate does the same,
    /// so that both restore the same state from the same changelog.
    pub fn retention_start(
        &self,
        topic: &str,
        partition: i32,
        log_start: i64,
        end: i64,
        retention: Duration,
    ) -> Result<i64, ChangelogError> {
        let starts = self.retention_starts(topic, &[(partition, log_start, end)], retention)?;
        Ok(starts.first().copied().unwrap_or(log_start))
    }

    /// [`retention_start`](Self::retention_start) of every `(partition, log start, end)`
    /// of `topic`, in their order.
    pub fn retention_starts(
        &self,
        topic: &str,
        partitions: &[(i32, i64, i64)],
        retention: Duration,
    ) -> Result<Vec<i64>, ChangelogError> {
        let last_offsets: Vec<(i32, i64)> = partitions
            .iter()
            .filter(|(_, log_start, end)| end > log_start)
            .map(|&(p, _, end)| (p, end - 1))
            .collect();
        let last = self.timestamps_at(topic, &last_offsets)?;
        let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let from: BTreeMap<i32, (i64, i64)> = last
            .iter()
            .filter_map(|(&p, &ts)| {
                let ts = ts?;
                let from = ts.saturating_sub(retention);
                (from > 0).then_some((p, (ts, from)))
            })
            .collect();
        let mut found = TopicPartitionList::new();
        if let Some(&first) = from.keys().next() {
            let mut tpl = TopicPartitionList::new();
            for (&p, &(_, at)) in &from {
                tpl.add_partition_offset(topic, p, Offset::Offset(at))
                    .map_err(|source| ChangelogError::Consume {
                        topic: topic.to_string(),
                        partition: p,
                        source,
                    })?;
            }
            found = self
                .consumer
                .offsets_for_times(tpl, Duration::from_secs(30))
                .map_err(|source| ChangelogError::Offsets {
                    topic: topic.to_string(),
                    partition: first,
                    source,
                })?;
        }
        Ok(partitions
            .iter()
            .map(|&(partition, log_start, end)| {
                let Some(&(last_timestamp, from_timestamp)) = from.get(&partition) else {
                    return log_start;
                };
                let start = match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.clamp(log_start, end),
                    _ => log_start,
                };
                info!(
                    topic,
                    partition,
                    last_timestamp,
                    from_timestamp,
                    start,
                    log_start,
                    "restoring from the first changelog record within the store's retention"
                );
                start
            })
            .collect())
    }

    /// The timestamp of the record at each `(partition, offset)`, `None` where no record is
    /// delivered there (a transaction marker or an aborted record): the first record or
    /// end of partition each one delivers once they are all assigned there.
    fn timestamps_at(
        &self,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<BTreeMap<i32, Option<i64>>, ChangelogError> {
        let mut found = BTreeMap::new();
        let Some(&(first, _)) = offsets.first() else {
            return Ok(found);
        };
        let consume_err = |partition, source| ChangelogError::Consume {
            topic: topic.to_string(),
            partition,
            source,
        };
        let mut tpl = TopicPartitionList::new();
        for &(p, offset) in offsets {
            tpl.add_partition_offset(topic, p, Offset::Offset(offset))
                .map_err(|e| consume_err(p, e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| consume_err(first, e))?;
        let started = Instant::now();
        let result = loop {
            if found.len() == offsets.len() {
                break Ok(());
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    found
                        .entry(msg.partition())
                        .or_insert(msg.timestamp().to_millis());
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    found.entry(p).or_insert(None);
                }
                Some(Err(source)) => break Err(consume_err(first, source)),
                None if started.elapsed() >= self.options.stall_timeout => {
                    let (partition, offset) = offsets
                        .iter()
                        .find(|(p, _)| !found.contains_key(p))
                        .copied()
                        .unwrap_or((first, -1));
                    break Err(ChangelogError::Stalled {
                        topic: topic.to_string(),
                        partition,
                        position: offset,
                        end: offset + 1,
                    });
                }
                None => {}
            }
        };
        let _ = self.consumer.unassign();
        result.map(|()| found)
    }
}
