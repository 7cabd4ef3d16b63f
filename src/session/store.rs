//! Typed session store: `SessionStore<K, V>` puts serdes over a [`CachingSessionStore`] and
//! turns its flushes into `SessionChange`s (a `Change { old, new }` per written session,
//! with the output and changelog timestamps). Owns (de)serialization and the typed view;
//! must not implement session-window rules (the aggregate step does) or produce to Kafka.

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};

use crate::session::error::{Part, SessionError};
use crate::session::serde::Serde;
use crate::session::windows::SessionWindows;
use crate::store::session_schema::{self, append_suffix};
use crate::store::shared_bytes::shared_copy;
use crate::store::{
    ByteKeyValueStore, CacheBudget, CachingSessionStore, FlushedEntry, InMemoryBytesStore,
    RecordContext, StoreError, StoredSession,
};

/// A key with its session window `[start, end]` (Kafka's `Windowed<K>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Windowed<K> {
    /// Record key.
    pub key: K,
    /// Session start.
    pub start: i64,
    /// Session end.
    pub end: i64,
}

/// Old and new aggregate of a session (`None` = absent / removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    /// Aggregate before the flushed write.
    pub old: Option<V>,
    /// Aggregate after it; `None` is a tombstone.
    pub new: Option<V>,
}

/// One flushed session write, typed for downstream and raw for the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionChange<K, V> {
    /// The session.
    pub key: Windowed<K>,
    /// Its old and new aggregate.
    pub change: Change<V>,
    /// Session composite key bytes (the changelog key).
    pub raw_key: Bytes,
    /// New aggregate bytes (the changelog value; `None` = tombstone).
    pub raw_new: Option<Bytes>,
    /// Context of the write.
    pub context: RecordContext,
    /// Timestamp of the downstream record: the session end (Kafka's
    /// `SessionCacheFlushListener` forwards with `window().end()`).
    pub output_timestamp: i64,
    /// Timestamp of the changelog record: the write's record-context timestamp.
    pub changelog_timestamp: i64,
}

/// A session read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session<V> {
    /// Session composite key bytes.
    pub raw_key: Bytes,
    /// Session start.
    pub start: i64,
    /// Session end.
    pub end: i64,
    /// Aggregate.
    pub value: V,
}

/// Typed session store over a caching byte store.
pub struct SessionStore<K, V, KS, VS, S: ByteKeyValueStore = InMemoryBytesStore> {
    bytes: CachingSessionStore<S>,
    key_serde: KS,
    value_serde: VS,
    raw_found: Vec<StoredSession>,
    /// Reused to serialize values before [`shared_copy`] copies them out.
    value_buf: BytesMut,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, KS, VS, S> SessionStore<K, V, KS, VS, S>
where
    KS: Serde<K>,
    VS: Serde<V>,
    S: ByteKeyValueStore,
{
    /// Wraps a caching byte store.
    pub fn new(bytes: CachingSessionStore<S>, key_serde: KS, value_serde: VS) -> Self {
        Self {
            bytes,
            key_serde,
            value_serde,
            raw_found: Vec::new(),
            value_buf: BytesMut::new(),
            _types: PhantomData,
        }
    }

    /// A store named `name` over `inner`, with the retention of `windows`.
    pub fn for_windows(
        name: impl Into<String>,
        budget: CacheBudget,
        inner: S,
        windows: &SessionWindows,
        key_serde: KS,
        value_serde: VS,
    ) -> Result<Self, SessionError> {
        let name = name.into();
        let bytes = CachingSessionStore::with_retention(
            name.clone(),
            budget,
            inner,
            windows.retention_ms(),
        )
        .map_err(|source| SessionError::Store {
            store: name,
            source,
        })?;
        Ok(Self::new(bytes, key_serde, value_serde))
    }

    /// The caching byte store (restore writes go through its `put_inner`/`delete_inner`).
    pub fn bytes(&self) -> &CachingSessionStore<S> {
        &self.bytes
    }

    /// Mutable access to the caching byte store.
    pub fn bytes_mut(&mut self) -> &mut CachingSessionStore<S> {
        &mut self.bytes
    }

    /// Appends the serialized `key` to `out`.
    pub fn serialize_key_into(&self, key: &K, out: &mut BytesMut) {
        self.key_serde.serialize_into(key, out);
    }

    /// Sessions of `key` with `end >= earliest_end` and `start <= latest_start`.
    pub fn find_sessions(
        &mut self,
        key: &K,
        earliest_end: i64,
        latest_start: i64,
    ) -> Result<Vec<Session<V>>, SessionError> {
        let key_bytes = self.key_serde.serialize(key);
        let mut out = Vec::new();
        self.find_sessions_raw_key(&key_bytes, earliest_end, latest_start, &mut out)?;
        Ok(out)
    }

    /// [`find_sessions`](Self::find_sessions) for an already serialized key, into `out`
    /// (cleared first).
    pub fn find_sessions_raw_key(
        &mut self,
        key_bytes: &[u8],
        earliest_end: i64,
        latest_start: i64,
        out: &mut Vec<Session<V>>,
    ) -> Result<(), SessionError> {
        out.clear();
        let mut raw = std::mem::take(&mut self.raw_found);
        let found = self
            .bytes
            .find_sessions_into(key_bytes, earliest_end, latest_start, &mut raw);
        let result = found.map_err(|e| self.store_error(e)).and_then(|()| {
            for s in raw.drain(..) {
                let value = self.decode_value(&s.value, s.start, s.end)?;
                out.push(Session {
                    raw_key: s.key,
                    start: s.start,
                    end: s.end,
                    value,
                });
            }
            Ok(())
        });
        raw.clear();
        self.raw_found = raw;
        result
    }

    /// The aggregate of session `[start, end]` of `key`.
    pub fn fetch_session(
        &mut self,
        key: &K,
        start: i64,
        end: i64,
    ) -> Result<Option<V>, SessionError> {
        let raw_key = self.session_key(key, start, end);
        let raw = self.bytes.get(&raw_key).map_err(|e| self.store_error(e))?;
        raw.map(|v| self.decode_value(&v, start, end)).transpose()
    }

    /// Stages `value` for session `[start, end]` of `key`.
    pub fn put(
        &mut self,
        key: &K,
        start: i64,
        end: i64,
        value: &V,
        context: RecordContext,
    ) -> Result<(), SessionError> {
        let raw_key = self.session_key(key, start, end);
        self.put_raw_key(raw_key, value, context)
    }

    /// Stages `value` under an already encoded session composite key.
    pub fn put_raw_key(
        &mut self,
        raw_key: Bytes,
        value: &V,
        context: RecordContext,
    ) -> Result<(), SessionError> {
        let raw_value = self.serialize_value(value);
        self.bytes
            .put(raw_key, raw_value, context)
            .map_err(|e| self.store_error(e))
    }

    /// Stages one merge step under encoded keys: the removal of `removed`, then `value`
    /// for `merged` (see [`CachingSessionStore::replace`]).
    pub fn replace_raw_key(
        &mut self,
        merged: Bytes,
        value: &V,
        removed: &[Bytes],
        context: RecordContext,
    ) -> Result<(), SessionError> {
        let raw_value = self.serialize_value(value);
        self.bytes
            .replace(merged, raw_value, removed, context)
            .map_err(|e| self.store_error(e))
    }

    /// Stages the removal of session `[start, end]` of `key`.
    pub fn remove(
        &mut self,
        key: &K,
        start: i64,
        end: i64,
        context: RecordContext,
    ) -> Result<(), SessionError> {
        let raw_key = self.session_key(key, start, end);
        self.remove_raw_key(raw_key, context)
    }

    /// Stages the removal of an already encoded session composite key.
    pub fn remove_raw_key(
        &mut self,
        raw_key: Bytes,
        context: RecordContext,
    ) -> Result<(), SessionError> {
        self.bytes
            .remove(raw_key, context)
            .map_err(|e| self.store_error(e))
    }

    /// Flushes the cache (writing through) and returns the typed changes, eviction-flushed
    /// ones first, each session key's writes in order; nothing for a session that was
    /// created and removed between flushes. A decode failure fails the call after the
    /// writes reached the inner store: the task must then fail (state is rebuilt from the
    /// changelog).
    pub fn flush(&mut self) -> Result<Vec<SessionChange<K, V>>, SessionError> {
        let flushed = self
            .bytes
            .flush_with_old()
            .map_err(|e| self.store_error(e))?;
        self.decode_flushed(flushed)
    }

    /// Changes written through by eviction since the last call or flush.
    pub fn take_evicted(&mut self) -> Result<Vec<SessionChange<K, V>>, SessionError> {
        let evicted = self.bytes.take_evicted();
        self.decode_flushed(evicted)
    }

    fn decode_flushed(
        &self,
        flushed: Vec<FlushedEntry>,
    ) -> Result<Vec<SessionChange<K, V>>, SessionError> {
        flushed.into_iter().map(|f| self.decode_change(f)).collect()
    }

    fn decode_change(&self, f: FlushedEntry) -> Result<SessionChange<K, V>, SessionError> {
        let d = session_schema::decode(&f.key).map_err(|e| self.store_error(e))?;
        let key =
            self.key_serde
                .deserialize(d.key)
                .map_err(|source| SessionError::Deserialize {
                    store: self.bytes.name().to_owned(),
                    part: Part::Key,
                    start: d.start,
                    end: d.end,
                    source,
                })?;
        let decode = |v: &Option<Bytes>| {
            v.as_ref()
                .map(|b| self.decode_value(b, d.start, d.end))
                .transpose()
        };
        let change = Change {
            old: decode(&f.old)?,
            new: decode(&f.new)?,
        };
        Ok(SessionChange {
            key: Windowed {
                key,
                start: d.start,
                end: d.end,
            },
            change,
            output_timestamp: d.end,
            changelog_timestamp: f.context.timestamp,
            raw_new: f.new,
            context: f.context,
            raw_key: f.key,
        })
    }

    fn session_key(&self, key: &K, start: i64, end: i64) -> Bytes {
        let mut buf = BytesMut::new();
        self.key_serde.serialize_into(key, &mut buf);
        append_suffix(&mut buf, start, end);
        buf.freeze()
    }

    /// `value` serialized into one shared allocation (see [`shared_copy`]).
    fn serialize_value(&mut self, value: &V) -> Bytes {
        self.value_buf.clear();
        self.value_serde.serialize_into(value, &mut self.value_buf);
        shared_copy(&self.value_buf)
    }

    fn decode_value(&self, bytes: &[u8], start: i64, end: i64) -> Result<V, SessionError> {
        self.value_serde
            .deserialize(bytes)
            .map_err(|source| SessionError::Deserialize {
                store: self.bytes.name().to_owned(),
                part: Part::Value,
                start,
                end,
                source,
            })
    }

    fn store_error(&self, source: StoreError) -> SessionError {
        SessionError::Store {
            store: self.bytes.name().to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::serde::{LongSerde, StringSerde};
    use crate::session::SerdeError;
    use crate::store::session_schema::session_key;

    type Counts = SessionStore<String, i64, StringSerde, LongSerde>;

    fn counts(budget: usize) -> Counts {
        let bytes = CachingSessionStore::new(
            "counts",
            CacheBudget::new(budget),
            InMemoryBytesStore::new(),
        );
        SessionStore::new(bytes, StringSerde, LongSerde)
    }

    fn ctx(ts: i64) -> RecordContext {
        RecordContext::new("in", 3, ts + 100, ts)
    }

    #[test]
    fn typed_round_trip_uses_kafka_bytes() {
        let mut s = counts(usize::MAX);
        let k = "user".to_string();
        s.put(&k, 10, 20, &3, ctx(20)).expect("put");
        let raw_key = session_key(b"user", 10, 20);
        let raw = s.bytes_mut().get(&raw_key).expect("get");
        assert_eq!(raw, Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 3])));
        assert_eq!(s.fetch_session(&k, 10, 20).expect("fetch"), Some(3));
        let found = s.find_sessions(&k, 0, 100).expect("find");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].start, found[0].end, found[0].value), (10, 20, 3));
        assert_eq!(found[0].raw_key, raw_key);
    }

    #[test]
    fn flush_yields_changes_with_both_timestamps() {
        let mut s = counts(usize::MAX);
        let k = "k".to_string();
        s.put(&k, 0, 5, &1, ctx(5)).expect("put");
        let first = s.flush().expect("flush");
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].change,
            Change {
                old: None,
                new: Some(1)
            }
        );
        s.put(&k, 0, 5, &2, ctx(4)).expect("put");
        s.remove(&k, 0, 5, ctx(7)).expect("remove");
        s.put(&k, 9, 9, &1, ctx(9)).expect("put");
        s.remove(&k, 9, 9, ctx(9)).expect("remove");
        let second = s.flush().expect("flush");
        assert_eq!(
            second.len(),
            1,
            "the session created and removed is not forwarded"
        );
        let c = &second[0];
        assert_eq!(
            c.key,
            Windowed {
                key: k.clone(),
                start: 0,
                end: 5
            }
        );
        assert_eq!(
            c.change,
            Change {
                old: Some(1),
                new: None
            }
        );
        assert_eq!(c.raw_new, None);
        assert_eq!(c.output_timestamp, 5, "window end");
        assert_eq!(c.changelog_timestamp, 7, "record-context timestamp");
        assert_eq!(c.context.offset, 107);
    }

    #[test]
    fn corrupt_stored_value_is_a_typed_error() {
        let mut s = counts(usize::MAX);
        let raw_key = session_key(b"k", 0, 1);
        s.bytes_mut()
            .put_inner(raw_key, Bytes::from_static(b"abc"))
            .expect("put_inner");
        let err = s
            .find_sessions(&"k".to_string(), 0, 10)
            .expect_err("corrupt");
        assert!(matches!(
            err,
            SessionError::Deserialize {
                part: Part::Value,
                source: SerdeError::WrongLength {
                    expected: 8,
                    actual: 3
                },
                ..
            }
        ));
        assert!(
            s.find_sessions(&"k".to_string(), 0, 10).is_err(),
            "buffer reuse survives errors"
        );
    }

    #[test]
    fn evicted_changes_are_typed_and_ordered() {
        let mut s = counts(0);
        let k = "k".to_string();
        s.put(&k, 0, 0, &1, ctx(0)).expect("put");
        s.put(&k, 0, 0, &2, ctx(1)).expect("put");
        let evicted = s.take_evicted().expect("evicted");
        let changes: Vec<Change<i64>> = evicted.into_iter().map(|c| c.change).collect();
        assert_eq!(
            changes,
            vec![
                Change {
                    old: None,
                    new: Some(1)
                },
                Change {
                    old: Some(1),
                    new: Some(2)
                }
            ]
        );
    }
}
