//! The bridge between raw input records and a typed session aggregation: a task holds one
//! [`TaskProcessor`] and hands it record bytes; the processor deserializes, runs the
//! session-window aggregate step against its store, and turns flushes into
//! [`OutputRecord`]s (the same bytes go to the changelog and to the output topic). Owns
//! deserialization policy for input records; does no I/O.

use std::marker::PhantomData;

use bytes::Bytes;

use crate::session::{
    AggregateMetrics, Aggregator, Count, Initializer, LongSerde, Merger, Outcome, Serde,
    SessionChange, SessionError, SessionStore, SessionWindowAggregate, SessionWindows, StringSerde,
    Sum,
};
use crate::store::{CacheBudget, CachingSessionStore, RecordContext, TaskBytesStore};

/// One flushed session, ready for the changelog and the output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Session composite key `key ‖ end ‖ start`: changelog key and output key alike.
    pub key: Bytes,
    /// Aggregate bytes; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Timestamp of the record behind the last write (changelog record timestamp).
    pub changelog_timestamp: i64,
    /// Session end (output record timestamp, as Kafka Streams forwards it).
    pub output_timestamp: i64,
}

impl OutputRecord {
    /// The serialized inner key: what the windowed partitioner hashes.
    pub fn inner_key(&self) -> &[u8] {
        &self.key[..self.key.len().saturating_sub(16)]
    }

    fn from_change<K, V>(c: SessionChange<K, V>) -> Self {
        Self {
            key: c.raw_key,
            value: c.raw_new,
            changelog_timestamp: c.changelog_timestamp,
            output_timestamp: c.output_timestamp,
        }
    }
}

/// Why an input record could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot deserialize the value of the record at {topic}/{partition}@{offset}")]
pub struct InputRecordError {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[source]
    pub source: crate::session::SerdeError,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Input(#[from] InputRecordError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What a task needs from its aggregation.
pub trait TaskProcessor: Send {
    /// Processes one input record; `key == None` is a null key.
    fn process(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        context: RecordContext,
    ) -> Result<Outcome, ProcessError>;
    /// Flushes the cache: the records for the changelog and the output, in order.
    fn flush(&mut self) -> Result<Vec<OutputRecord>, ProcessError>;
    /// Records that cache eviction wrote through since the last call.
    fn take_evicted(&mut self) -> Result<Vec<OutputRecord>, ProcessError>;
    /// The byte store under the cache (restore writes through `put_inner`/`delete_inner`).
    fn store(&mut self) -> &mut CachingSessionStore<TaskBytesStore>;
    /// Record counters.
    fn metrics(&self) -> AggregateMetrics;
}

/// Builds a task's processor: one per task, each with its own store and stream time.
pub trait ProcessorFactory: Send + Sync {
    /// A processor whose caching store sits on `inner` (the runtime opens it as
    /// `store.type` says: in memory, or persistent under the task's directory).
    fn create(
        &self,
        store_name: &str,
        budget: CacheBudget,
        inner: TaskBytesStore,
    ) -> Result<Box<dyn TaskProcessor>, ProcessError>;
}

/// A session-window aggregation per UTF-8 string key (decoded as Java's `StringDeserializer`
/// does: malformed bytes become U+FFFD), with input values read by `VS` and aggregates
/// stored by `AS`.
pub struct SessionAggregation<V, A, VS, AS, I, G, M> {
    store: SessionStore<String, A, StringSerde, AS, TaskBytesStore>,
    step: SessionWindowAggregate<A, I, G, M>,
    value_serde: VS,
    _value: PhantomData<fn() -> V>,
}

impl<V, A, VS, AS, I, G, M> TaskProcessor for SessionAggregation<V, A, VS, AS, I, G, M>
where
    V: Default,
    VS: Serde<V> + Send,
    AS: Serde<A> + Send,
    A: Send,
    I: Initializer<A> + Send,
    G: Aggregator<String, V, A> + Send,
    M: Merger<String, A> + Send,
{
    fn process(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        context: RecordContext,
    ) -> Result<Outcome, ProcessError> {
        let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
        let value = match value {
            Some(bytes) => {
                self.value_serde
                    .deserialize(bytes)
                    .map_err(|source| InputRecordError {
                        topic: context.topic.to_string(),
                        partition: context.partition,
                        offset: context.offset,
                        source,
                    })?
            }
            None => V::default(),
        };
        Ok(self
            .step
            .process(&mut self.store, key.as_ref(), &value, context)?)
    }

    fn flush(&mut self) -> Result<Vec<OutputRecord>, ProcessError> {
        Ok(self
            .store
            .flush()?
            .into_iter()
            .map(OutputRecord::from_change)
            .collect())
    }

    fn take_evicted(&mut self) -> Result<Vec<OutputRecord>, ProcessError> {
        Ok(self
            .store
            .take_evicted()?
            .into_iter()
            .map(OutputRecord::from_change)
            .collect())
    }

    fn store(&mut self) -> &mut CachingSessionStore<TaskBytesStore> {
        self.store.bytes_mut()
    }

    fn metrics(&self) -> AggregateMetrics {
        self.step.metrics()
    }
}

/// Input values the count ignores: any bytes deserialize to `()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoredValue;

impl Serde<()> for IgnoredValue {
    fn serialize_into(&self, _: &(), _: &mut bytes::BytesMut) {}
    fn deserialize(&self, _: &[u8]) -> Result<(), crate::session::SerdeError> {
        Ok(())
    }
}

/// Builds [`SessionAggregation`]s from cloneable functions and serdes: the way to plug a
/// custom aggregation into the worker (see [`count_factory`] and [`sum_factory`]).
pub struct SessionAggregationFactory<V, A, VS, AS, I, G, M> {
    windows: SessionWindows,
    value_serde: VS,
    aggregate_serde: AS,
    initializer: I,
    aggregator: G,
    merger: M,
    _types: PhantomData<fn() -> (V, A)>,
}

impl<V, A, VS, AS, I, G, M> SessionAggregationFactory<V, A, VS, AS, I, G, M> {
    pub fn new(
        windows: SessionWindows,
        value_serde: VS,
        aggregate_serde: AS,
        initializer: I,
        aggregator: G,
        merger: M,
    ) -> Self {
        Self {
            windows,
            value_serde,
            aggregate_serde,
            initializer,
            aggregator,
            merger,
            _types: PhantomData,
        }
    }
}

impl<V, A, VS, AS, I, G, M> ProcessorFactory for SessionAggregationFactory<V, A, VS, AS, I, G, M>
where
    V: Default + 'static,
    A: Send + 'static,
    VS: Serde<V> + Clone + Send + Sync + 'static,
    AS: Serde<A> + Clone + Send + Sync + 'static,
    I: Initializer<A> + Clone + Send + Sync + 'static,
    G: Aggregator<String, V, A> + Clone + Send + Sync + 'static,
    M: Merger<String, A> + Clone + Send + Sync + 'static,
{
    fn create(
        &self,
        store_name: &str,
        budget: CacheBudget,
        inner: TaskBytesStore,
    ) -> Result<Box<dyn TaskProcessor>, ProcessError> {
        let store = SessionStore::for_windows(
            store_name,
            budget,
            inner,
            &self.windows,
            StringSerde,
            self.aggregate_serde.clone(),
        )?;
        Ok(Box::new(SessionAggregation {
            store,
            step: SessionWindowAggregate::new(
                self.windows,
                self.initializer.clone(),
                self.aggregator.clone(),
                self.merger.clone(),
            ),
            value_serde: self.value_serde.clone(),
            _value: PhantomData,
        }))
    }
}

/// The default job: session-window count per key (Java `count()`), values ignored.
pub fn count_factory(windows: SessionWindows) -> impl ProcessorFactory {
    SessionAggregationFactory::<(), i64, _, _, _, _, _>::new(
        windows,
        IgnoredValue,
        LongSerde,
        Count,
        Count,
        Count,
    )
}

/// The sum example: session-window sum of i64 big-endian values per key (a null value
/// adds 0).
pub fn sum_factory(windows: SessionWindows) -> impl ProcessorFactory {
    SessionAggregationFactory::<i64, i64, _, _, _, _, _>::new(
        windows, LongSerde, LongSerde, Sum, Sum, Sum,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn windows() -> SessionWindows {
        SessionWindows::new(Duration::from_millis(10), Duration::from_millis(100), None)
            .expect("valid windows")
    }

    fn ctx(offset: i64, timestamp: i64) -> RecordContext {
        RecordContext::new("in", 0, offset, timestamp)
    }

    fn last_values(records: &[OutputRecord]) -> std::collections::BTreeMap<Bytes, Option<Bytes>> {
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect()
    }

    #[test]
    fn count_merges_sessions_and_flushes_put_before_tombstones() {
        let mut p = count_factory(windows())
            .create(
                "counts",
                CacheBudget::new(1 << 20),
                TaskBytesStore::default(),
            )
            .unwrap();
        // 100 and 115 are more than a gap apart; 108 bridges them into one session.
        for (offset, t) in [(0, 100), (1, 115), (2, 108)] {
            p.process(Some(b"k"), Some(b"ignored"), ctx(offset, t))
                .unwrap();
        }
        let flushed = p.flush().unwrap();
        let view = last_values(&flushed);
        let merged = crate::store::session_schema::session_key(b"k", 100, 115);
        assert_eq!(
            view.get(&merged),
            Some(&Some(Bytes::from(3i64.to_be_bytes().to_vec())))
        );
        assert_eq!(
            view.len(),
            1,
            "sessions created and merged away between flushes emit nothing"
        );
        assert_eq!(
            flushed[0].output_timestamp, 115,
            "output stamped with the session end"
        );
        assert_eq!(
            flushed[0].changelog_timestamp, 108,
            "changelog stamped with the last record"
        );
        assert_eq!(flushed[0].inner_key(), b"k");
    }

    #[test]
    fn sum_adds_values_and_names_an_undeserializable_record() {
        let mut p = sum_factory(windows())
            .create("sums", CacheBudget::new(1 << 20), TaskBytesStore::default())
            .unwrap();
        p.process(Some(b"k"), Some(&5i64.to_be_bytes()), ctx(0, 100))
            .unwrap();
        p.process(Some(b"k"), Some(&7i64.to_be_bytes()), ctx(1, 105))
            .unwrap();
        match p.process(Some(b"k"), Some(b"oops"), ctx(2, 106)) {
            Err(ProcessError::Input(e)) => {
                assert_eq!((e.topic.as_str(), e.partition, e.offset), ("in", 0, 2));
            }
            other => panic!("expected an input error, got {other:?}"),
        }
        let flushed = p.flush().unwrap();
        let key = crate::store::session_schema::session_key(b"k", 100, 105);
        assert_eq!(
            last_values(&flushed).get(&key),
            Some(&Some(Bytes::from(12i64.to_be_bytes().to_vec())))
        );
    }

    #[test]
    fn malformed_utf8_keys_are_replaced_as_java_does() {
        let mut p = count_factory(windows())
            .create(
                "counts",
                CacheBudget::new(1 << 20),
                TaskBytesStore::default(),
            )
            .unwrap();
        p.process(Some(&[0x66, 0xff, 0x6f]), None, ctx(0, 100))
            .unwrap();
        let flushed = p.flush().unwrap();
        assert_eq!(flushed[0].inner_key(), "f\u{fffd}o".as_bytes());
    }
}
