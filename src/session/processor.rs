//! The session-window aggregate step (Kafka Streams' `KStreamSessionWindowAggregate`,
//! docs/DESIGN.md §4). Owns a task's observed stream time and its record counters; reads and
//! writes sessions only through a typed [`SessionStore`] it is handed. Must not flush, produce or
//! commit: the task decides when the store's dirty sessions leave.
//!
//! Per record (key `k`, timestamp `t`): skip a missing key or a negative timestamp; stream
//! time `st = max(st, t)`; `close = st - grace - gap`; find the sessions of `k` with
//! `end >= t - gap` and `start <= t + gap`; fold them into `initializer()` with the merger
//! (store order) while widening `[t, t]` to cover them. If the merged `end < close`, the
//! record is late: it is counted and nothing changes. Otherwise the aggregator folds the
//! record in, and the found sessions whose key is not the merged key are removed and the
//! merged session put in one store step ([`SessionStore::replace_raw_key`]): the store is
//! written in Kafka's order (removes first, so a replaced session's tombstone is judged
//! against the expiry clock before the merged end moves it), while the changelog and
//! output carry the new session before the tombstones of the ones it replaces (docs/DESIGN.md §4
//! put-first).

use bytes::{Bytes, BytesMut};
use tracing::debug;

use crate::session::aggregate::{Aggregator, Initializer, Merger};
use crate::session::error::SessionError;
use crate::session::serde::Serde;
use crate::session::store::{Session, SessionStore};
use crate::session::windows::SessionWindows;
use crate::store::session_schema::append_suffix;
use crate::store::shared_bytes::shared_copy;
use crate::store::{ByteKeyValueStore, RecordContext};

/// Record counters of one aggregate step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AggregateMetrics {
    /// Records folded into a session.
    pub processed: u64,
    /// Records dropped because their merged session had closed.
    pub late_dropped: u64,
    /// Records skipped for a missing key.
    pub skipped_null_key: u64,
    /// Records skipped for a negative timestamp.
    pub skipped_negative_ts: u64,
}

/// What [`SessionWindowAggregate::process`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The record was aggregated into session `[start, end]`, replacing `replaced` others.
    Aggregated {
        /// Merged session start.
        start: i64,
        /// Merged session end.
        end: i64,
        /// Found sessions removed because the merged session replaces them.
        replaced: usize,
    },
    /// The merged session ended before `close`: dropped as late.
    DroppedLate {
        /// Merged session end.
        end: i64,
        /// Close time at this record.
        close: i64,
    },
    /// The record had no key.
    SkippedNullKey,
    /// The record had a negative timestamp.
    SkippedNegativeTimestamp,
}

/// The aggregate step of one task: windows, functions, stream time and counters.
pub struct SessionWindowAggregate<A, I, G, M> {
    windows: SessionWindows,
    initializer: I,
    aggregator: G,
    merger: M,
    stream_time: Option<i64>,
    metrics: AggregateMetrics,
    found: Vec<Session<A>>,
    replaced: Vec<Bytes>,
    key_buf: BytesMut,
}

impl<A, I, G, M> SessionWindowAggregate<A, I, G, M> {
    /// A step with no stream time observed yet.
    pub fn new(windows: SessionWindows, initializer: I, aggregator: G, merger: M) -> Self {
        Self {
            windows,
            initializer,
            aggregator,
            merger,
            stream_time: None,
            metrics: AggregateMetrics::default(),
            found: Vec::new(),
            replaced: Vec::new(),
            key_buf: BytesMut::new(),
        }
    }

    /// The windows.
    pub fn windows(&self) -> &SessionWindows {
        &self.windows
    }

    /// Largest record timestamp seen (in memory only: not restored after a restart).
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// Counters so far.
    pub fn metrics(&self) -> AggregateMetrics {
        self.metrics
    }

    /// Processes one record (its timestamp is `context.timestamp`); see the module doc.
    pub fn process<K, V, KS, VS, S>(
        &mut self,
        store: &mut SessionStore<K, A, KS, VS, S>,
        key: Option<&K>,
        value: &V,
        context: RecordContext,
    ) -> Result<Outcome, SessionError>
    where
        I: Initializer<A>,
        G: Aggregator<K, V, A>,
        M: Merger<K, A>,
        KS: Serde<K>,
        VS: Serde<A>,
        S: ByteKeyValueStore,
    {
        let Some(key) = key else {
            self.metrics.skipped_null_key += 1;
            debug!(topic = %context.topic, partition = context.partition, offset = context.offset,
                "skipping record with null key");
            return Ok(Outcome::SkippedNullKey);
        };
        let t = context.timestamp;
        if t < 0 {
            self.metrics.skipped_negative_ts += 1;
            debug!(topic = %context.topic, partition = context.partition, offset = context.offset,
                timestamp = t, "skipping record with negative timestamp");
            return Ok(Outcome::SkippedNegativeTimestamp);
        }
        let gap = self.windows.gap_ms();
        let stream_time = self.stream_time.map_or(t, |st| st.max(t));
        self.stream_time = Some(stream_time);
        let close = stream_time
            .saturating_sub(self.windows.grace_ms())
            .saturating_sub(gap);

        self.key_buf.clear();
        store.serialize_key_into(key, &mut self.key_buf);
        store.find_sessions_raw_key(
            &self.key_buf,
            t.saturating_sub(gap),
            t.saturating_add(gap),
            &mut self.found,
        )?;

        let (mut start, mut end) = (t, t);
        let mut agg = self.initializer.init();
        self.replaced.clear();
        for s in self.found.drain(..) {
            start = start.min(s.start);
            end = end.max(s.end);
            agg = self.merger.merge(key, agg, s.value);
            self.replaced.push(s.raw_key);
        }

        if end < close {
            self.metrics.late_dropped += 1;
            self.replaced.clear();
            debug!(topic = %context.topic, partition = context.partition, offset = context.offset,
                timestamp = t, start, end, close, stream_time, "dropping late record");
            return Ok(Outcome::DroppedLate { end, close });
        }

        agg = self.aggregator.aggregate(key, value, agg);
        append_suffix(&mut self.key_buf, start, end);
        let merged_key = shared_copy(&self.key_buf);
        self.replaced.retain(|k| *k != merged_key);
        let replaced = self.replaced.len();
        store.replace_raw_key(merged_key, &agg, &self.replaced, context)?;
        self.replaced.clear();
        self.metrics.processed += 1;
        Ok(Outcome::Aggregated {
            start,
            end,
            replaced,
        })
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::session::aggregate::Count;
    use crate::session::serde::{LongSerde, StringSerde};
    use crate::session::store::Change;
    use crate::store::session_schema::session_key;
    use crate::store::{CacheBudget, InMemoryBytesStore};

    type Counts = SessionStore<String, i64, StringSerde, LongSerde>;
    type CountStep = SessionWindowAggregate<i64, Count, Count, Count>;

    fn setup(gap: u64, grace: u64) -> (CountStep, Counts) {
        setup_with_budget(gap, grace, usize::MAX)
    }

    fn rec(step: &mut CountStep, store: &mut Counts, key: &str, t: i64) -> Outcome {
        let ctx = RecordContext::new("in", 0, t, t);
        step.process(store, Some(&key.to_string()), &(), ctx)
            .expect("process")
    }

    fn sessions(store: &mut Counts, key: &str) -> Vec<(i64, i64, i64)> {
        store
            .find_sessions(&key.to_string(), i64::MIN, i64::MAX)
            .expect("find")
            .into_iter()
            .map(|s| (s.start, s.end, s.value))
            .collect()
    }

    #[test]
    fn records_within_the_gap_share_a_session() {
        let (mut step, mut store) = setup(10, 100);
        rec(&mut step, &mut store, "a", 0);
        rec(&mut step, &mut store, "a", 10);
        rec(&mut step, &mut store, "a", 21);
        rec(&mut step, &mut store, "b", 5);
        assert_eq!(sessions(&mut store, "a"), vec![(0, 10, 2), (21, 21, 1)]);
        assert_eq!(sessions(&mut store, "b"), vec![(5, 5, 1)]);
        assert_eq!(
            rec(&mut step, &mut store, "a", 15),
            Outcome::Aggregated {
                start: 0,
                end: 21,
                replaced: 2
            }
        );
        assert_eq!(sessions(&mut store, "a"), vec![(0, 21, 4)]);
        assert_eq!(step.metrics().processed, 5);
    }

    #[test]
    fn merged_session_is_flushed_before_the_tombstones_it_replaces() {
        let (mut step, mut store) = setup(10, 100);
        rec(&mut step, &mut store, "a", 0);
        rec(&mut step, &mut store, "a", 20);
        store.flush().expect("flush");
        rec(&mut step, &mut store, "a", 10);
        let flushed: Vec<(i64, i64, Change<i64>)> = store
            .flush()
            .expect("flush")
            .into_iter()
            .map(|c| (c.key.start, c.key.end, c.change))
            .collect();
        assert_eq!(
            flushed,
            vec![
                (
                    0,
                    20,
                    Change {
                        old: None,
                        new: Some(3)
                    }
                ),
                (
                    0,
                    0,
                    Change {
                        old: Some(1),
                        new: None
                    }
                ),
                (
                    20,
                    20,
                    Change {
                        old: Some(1),
                        new: None
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_found_session_with_the_merged_key_is_updated_not_tombstoned() {
        let (mut step, mut store) = setup(10, 100);
        rec(&mut step, &mut store, "a", 0);
        rec(&mut step, &mut store, "a", 8);
        store.flush().expect("flush");
        assert_eq!(
            rec(&mut step, &mut store, "a", 4),
            Outcome::Aggregated {
                start: 0,
                end: 8,
                replaced: 0
            }
        );
        let flushed = store.flush().expect("flush");
        assert_eq!(flushed.len(), 1);
        assert_eq!(
            flushed[0].change,
            Change {
                old: Some(2),
                new: Some(3)
            }
        );
    }

    #[test]
    fn late_boundary_is_strictly_before_close() {
        let (mut step, mut store) = setup(10, 5);
        rec(&mut step, &mut store, "a", 100);
        assert_eq!(
            rec(&mut step, &mut store, "b", 84),
            Outcome::DroppedLate { end: 84, close: 85 }
        );
        assert!(matches!(
            rec(&mut step, &mut store, "b", 85),
            Outcome::Aggregated { .. }
        ));
        let flushed = store.flush().expect("flush");
        let b: Vec<(i64, i64, Option<i64>)> = flushed
            .into_iter()
            .filter(|c| c.key.key == "b")
            .map(|c| (c.key.start, c.key.end, c.change.new))
            .collect();
        assert_eq!(
            b,
            vec![(85, 85, Some(1))],
            "accepted at end == close and forwarded"
        );
        assert_eq!(step.metrics().late_dropped, 1);
        assert_eq!(step.stream_time(), Some(100));
    }

    #[test]
    fn an_old_record_joining_an_open_session_is_not_late() {
        let (mut step, mut store) = setup(10, 0);
        rec(&mut step, &mut store, "a", 95);
        rec(&mut step, &mut store, "z", 104);
        assert_eq!(
            rec(&mut step, &mut store, "a", 88),
            Outcome::Aggregated {
                start: 88,
                end: 95,
                replaced: 1
            },
            "merged end 95 >= close 104 - 10 even though 88 < 94"
        );
        assert_eq!(
            rec(&mut step, &mut store, "b", 88),
            Outcome::DroppedLate { end: 88, close: 94 }
        );
    }

    #[test]
    fn null_keys_and_negative_timestamps_are_skipped_without_moving_stream_time() {
        let (mut step, mut store) = setup(10, 0);
        let ctx = RecordContext::new("in", 0, 0, 50);
        assert_eq!(
            step.process(&mut store, None, &(), ctx).expect("process"),
            Outcome::SkippedNullKey
        );
        assert_eq!(
            rec(&mut step, &mut store, "a", -1),
            Outcome::SkippedNegativeTimestamp
        );
        assert_eq!(step.stream_time(), None);
        assert!(store.flush().expect("flush").is_empty());
        let m = step.metrics();
        assert_eq!(
            (m.skipped_null_key, m.skipped_negative_ts, m.processed),
            (1, 1, 0)
        );
    }

    #[test]
    fn overlapping_sessions_of_one_key_are_all_merged() {
        let (mut step, mut store) = setup(10, 100);
        for (start, end, count) in [(0, 10, 2), (5, 15, 3), (12, 12, 1)] {
            store
                .bytes_mut()
                .put_inner(session_key(b"a", start, end), LongSerde.serialize(&count))
                .expect("restore");
        }
        assert_eq!(
            rec(&mut step, &mut store, "a", 14),
            Outcome::Aggregated {
                start: 0,
                end: 15,
                replaced: 3
            }
        );
        assert_eq!(sessions(&mut store, "a"), vec![(0, 15, 7)]);
    }

    fn setup_with_budget(gap: u64, grace: u64, budget: usize) -> (CountStep, Counts) {
        let windows = SessionWindows::new(
            Duration::from_millis(gap),
            Duration::from_millis(grace),
            None,
        )
        .expect("windows");
        let store = SessionStore::for_windows(
            "counts",
            CacheBudget::new(budget),
            InMemoryBytesStore::new(),
            &windows,
            StringSerde,
            LongSerde,
        )
        .expect("store");
        (
            SessionWindowAggregate::new(windows, Count, Count, Count),
            store,
        )
    }

    /// Processes `key@t` and flushes (what `TopologyTestDriver` does after every record);
    /// returns `(key, start, end, new count)` of every change written, evicted ones first.
    fn rec_flushed(
        step: &mut CountStep,
        store: &mut Counts,
        key: &str,
        t: i64,
    ) -> Vec<(String, i64, i64, Option<i64>)> {
        rec(step, store, key, t);
        let mut changes = store.take_evicted().expect("evicted");
        changes.extend(store.flush().expect("flush"));
        changes
            .into_iter()
            .map(|c| (c.key.key, c.key.start, c.key.end, c.change.new))
            .collect()
    }

    /// gap 10, grace 0 (retention 10), stream time 100, S = a[80,85] and then a@92
    /// (close 90). Kafka Streams 4.4.0 (`TopologyTestDriver`, default 10 MB cache): S is
    /// still in the cache, the cache is not filtered by expiry, so a@92 merges it into
    /// a[80,92] = 3. S's tombstone is not written: the inner store's clock is 100 after
    /// b@100 was flushed, S (85 <= 100 - 10) reads as absent, and an entry whose old and
    /// new value are both absent is skipped.
    #[test]
    fn out_of_order_record_merges_a_cached_session_the_inner_store_expired() {
        let (mut step, mut store) = setup_with_budget(10, 0, usize::MAX);
        let s = |k: &str, start, end, n| (k.to_string(), start, end, n);
        assert_eq!(
            rec_flushed(&mut step, &mut store, "a", 80),
            vec![s("a", 80, 80, Some(1))]
        );
        assert_eq!(
            rec_flushed(&mut step, &mut store, "a", 85),
            vec![s("a", 80, 85, Some(2)), s("a", 80, 80, None)],
            "put-first (docs/DESIGN.md §4); Java emits the tombstone first"
        );
        assert_eq!(
            rec_flushed(&mut step, &mut store, "b", 100),
            vec![s("b", 100, 100, Some(1))]
        );
        assert_eq!(store.bytes().observed_end(), Some(100));
        assert_eq!(
            rec_flushed(&mut step, &mut store, "a", 92),
            vec![s("a", 80, 92, Some(3))],
            "Java 4.4.0: out a[80,92]=3, no tombstone for a[80,85]"
        );
        assert_eq!(sessions(&mut store, "a"), vec![(80, 92, 3)]);
    }

    /// The same records with `statestore.cache.max.bytes = 0`: nothing stays cached, the
    /// inner store hides S, and a@92 starts a session of its own (Java 4.4.0 emits
    /// a[92,92] = 1 and nothing else).
    #[test]
    fn without_a_cache_the_inner_clock_hides_the_expired_session() {
        let (mut step, mut store) = setup_with_budget(10, 0, 0);
        let s = |k: &str, start, end, n| (k.to_string(), start, end, n);
        rec_flushed(&mut step, &mut store, "a", 80);
        rec_flushed(&mut step, &mut store, "a", 85);
        rec_flushed(&mut step, &mut store, "b", 100);
        assert_eq!(
            rec_flushed(&mut step, &mut store, "a", 92),
            vec![s("a", 92, 92, Some(1))]
        );
        assert_eq!(sessions(&mut store, "a"), vec![(92, 92, 1)]);
    }

    /// gap 10, grace 0 (retention 10): a@0, then a@10 finds [0,0] exactly a gap behind and
    /// merges it into [0,10]. Kafka Streams 4.4.0 removes [0,0] before it puts [0,10], so
    /// the store still shows [0,0] (clock 0) when its tombstone reads `old`: the tombstone
    /// is written. Putting [0,10] first would move the clock to 10 and expire [0,0]
    /// (0 <= 10 - 10): no tombstone, a stale [0,0] = 1 in the changelog and the output.
    /// Found by the randomized run against Kafka Streams (`JEQ_RANDOM_SEEDS`).
    #[test]
    fn a_session_a_gap_behind_gets_its_tombstone_with_grace_zero() {
        for budget in [0, usize::MAX] {
            let (mut step, mut store) = setup_with_budget(10, 0, budget);
            let s = |k: &str, start, end, n| (k.to_string(), start, end, n);
            assert_eq!(
                rec_flushed(&mut step, &mut store, "a", 0),
                vec![s("a", 0, 0, Some(1))]
            );
            assert_eq!(
                rec_flushed(&mut step, &mut store, "a", 10),
                vec![s("a", 0, 10, Some(2)), s("a", 0, 0, None)],
                "budget {budget}: the merged session first (put-first), then the tombstone"
            );
            assert_eq!(store.bytes().observed_end(), Some(10));
            assert_eq!(sessions(&mut store, "a"), vec![(0, 10, 2)]);
        }
    }

    #[test]
    fn uncached_sessions_past_retention_are_expired_silently() {
        let (mut step, mut store) = setup_with_budget(10, 0, 0);
        rec(&mut step, &mut store, "a", 0);
        rec(&mut step, &mut store, "b", 9);
        assert_eq!(sessions(&mut store, "a").len(), 1, "end 0 > 9 - 10: live");
        rec(&mut step, &mut store, "b", 10);
        assert_eq!(store.bytes().observed_end(), Some(10));
        assert!(
            sessions(&mut store, "a").is_empty(),
            "end 0 <= 10 - 10: expired"
        );
        assert!(store
            .bytes()
            .inner()
            .get(&session_key(b"a", 0, 0))
            .expect("get")
            .is_none());
        let mut flushed = store.take_evicted().expect("evicted");
        flushed.extend(store.flush().expect("flush"));
        assert!(
            flushed
                .iter()
                .all(|c| c.key.key != "a" || c.change.new.is_some()),
            "no tombstone for expiry"
        );
    }
}
