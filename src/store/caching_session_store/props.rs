//! Model tests: random operation sequences on `CachingSessionStore` against a naive model
//! (a `BTreeMap` for the inner store with Java's expiry clock, clean cached values and an
//! ordered dirty list).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::store::session_schema::session_key;

const KEYS: [&[u8]; 5] = [b"k", b"kk", b"k\x00", b"a", b""];

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        start: i64,
        len: i64,
        value: u8,
    },
    Remove {
        key: usize,
        start: i64,
        len: i64,
    },
    Get {
        key: usize,
        start: i64,
        len: i64,
    },
    Find {
        key: usize,
        earliest_end: i64,
        latest_start: i64,
    },
    Range {
        lo: (usize, i64, i64),
        hi: (usize, i64, i64),
    },
    ScanAll,
    Flush,
    PutInner {
        key: usize,
        start: i64,
        len: i64,
        value: u8,
    },
    DeleteInner {
        key: usize,
        start: i64,
        len: i64,
    },
}

fn op(with_restore: bool) -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let t = 0i64..40;
    let l = 0i64..8;
    let restore_weight = if with_restore { 1 } else { 0 };
    prop_oneof![
        6 => (k.clone(), t.clone(), l.clone(), any::<u8>())
            .prop_map(|(key, start, len, value)| Op::Put { key, start, len, value }),
        3 => (k.clone(), t.clone(), l.clone()).prop_map(|(key, start, len)| Op::Remove { key, start, len }),
        2 => (k.clone(), t.clone(), l.clone()).prop_map(|(key, start, len)| Op::Get { key, start, len }),
        3 => (k.clone(), -5i64..50, -5i64..50)
            .prop_map(|(key, earliest_end, latest_start)| Op::Find { key, earliest_end, latest_start }),
        1 => ((k.clone(), t.clone(), t.clone()), (k.clone(), t.clone(), t.clone()))
            .prop_map(|(lo, hi)| Op::Range { lo, hi }),
        1 => Just(Op::ScanAll),
        2 => Just(Op::Flush),
        restore_weight => (k.clone(), t.clone(), l.clone(), any::<u8>())
            .prop_map(|(key, start, len, value)| Op::PutInner { key, start, len, value }),
        restore_weight => (k, t, l).prop_map(|(key, start, len)| Op::DeleteInner { key, start, len }),
    ]
}

fn sk(key: usize, start: i64, len: i64) -> Bytes {
    session_key(KEYS[key], start, start + len)
}

/// The naive model: inner map with Java's expiry clock (advanced only by writes that reach
/// it), clean cached values (an unbounded cache keeps every flushed value), dirty entries
/// in dirty order.
#[derive(Default)]
struct Model {
    inner: BTreeMap<Bytes, Bytes>,
    clean: BTreeMap<Bytes, Bytes>,
    dirty: Vec<(Bytes, Option<Bytes>, RecordContext)>,
    retention: Option<i64>,
    observed: Option<i64>,
}

impl Model {
    fn expired(&self, key: &[u8]) -> bool {
        let end = session_schema::session_end_of(key).expect("model keys are session keys");
        match (self.observed, self.retention) {
            (Some(o), Some(r)) => end <= o - r,
            _ => false,
        }
    }

    /// Advances the inner clock and drops whatever expired from the inner map only.
    fn observe(&mut self, key: &[u8]) {
        if self.retention.is_none() {
            return;
        }
        let end = session_schema::session_end_of(key).expect("model keys are session keys");
        self.observed = self.observed.max(Some(end));
        let expired: Vec<Bytes> = self
            .inner
            .keys()
            .filter(|k| self.expired(k))
            .cloned()
            .collect();
        for k in expired {
            self.inner.remove(&k);
        }
    }

    fn stage(&mut self, key: Bytes, value: Option<Bytes>, ctx: RecordContext) {
        self.clean.remove(&key);
        self.dirty.retain(|(k, _, _)| *k != key);
        self.dirty.push((key, value, ctx));
    }

    /// Inner sessions that have not expired, overlaid by the cache (never filtered).
    fn view(&self) -> BTreeMap<Bytes, Bytes> {
        let mut view: BTreeMap<Bytes, Bytes> = self
            .inner
            .iter()
            .filter(|(k, _)| !self.expired(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        view.extend(self.clean.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (k, v, _) in &self.dirty {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view
    }

    fn flush(&mut self) -> Vec<FlushedEntry> {
        let mut out = Vec::new();
        for (key, new, context) in std::mem::take(&mut self.dirty) {
            let old = self
                .inner
                .get(&key)
                .filter(|_| !self.expired(&key))
                .cloned();
            if let Some(v) = &new {
                self.clean.insert(key.clone(), v.clone());
            }
            if new.is_none() && old.is_none() {
                continue;
            }
            self.observe(&key);
            match &new {
                Some(v) if !self.expired(&key) => self.inner.insert(key.clone(), v.clone()),
                _ => self.inner.remove(&key),
            };
            out.push(FlushedEntry {
                key,
                old,
                new,
                context,
            });
        }
        out
    }

    fn put_inner(&mut self, key: Bytes, value: Bytes) {
        self.clean.remove(&key);
        self.observe(&key);
        if !self.expired(&key) {
            self.inner.insert(key, value);
        }
    }

    fn delete_inner(&mut self, key: &Bytes) {
        self.clean.remove(key);
        self.observe(key);
        self.inner.remove(key);
    }
}

/// Applies `ops` to the store and the model; returns the store's flushed/evicted stream.
fn run<S: ByteKeyValueStore>(
    store: &mut CachingSessionStore<S>,
    model: &mut Model,
    ops: &[Op],
    exact_flush: bool,
) -> Result<Vec<FlushedEntry>, TestCaseError> {
    let mut stream = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let ctx = RecordContext::new("in", 0, i as i64, i as i64);
        match op.clone() {
            Op::Put {
                key,
                start,
                len,
                value,
            } => {
                let v = Bytes::from(vec![value]);
                store
                    .put(sk(key, start, len), v.clone(), ctx.clone())
                    .expect("put");
                model.stage(sk(key, start, len), Some(v), ctx);
            }
            Op::Remove { key, start, len } => {
                store
                    .remove(sk(key, start, len), ctx.clone())
                    .expect("remove");
                model.stage(sk(key, start, len), None, ctx);
            }
            Op::Get { key, start, len } => {
                let got = store.get(&sk(key, start, len)).expect("get");
                prop_assert_eq!(got, model.view().get(&sk(key, start, len)).cloned());
            }
            Op::Find {
                key,
                earliest_end,
                latest_start,
            } => {
                let got = store
                    .find_sessions(KEYS[key], earliest_end, latest_start)
                    .expect("find");
                let want: Vec<StoredSession> = model
                    .view()
                    .into_iter()
                    .filter_map(|(k, value)| {
                        let d = session_schema::decode(&k).ok()?;
                        let hit =
                            d.key == KEYS[key] && d.end >= earliest_end && d.start <= latest_start;
                        hit.then(|| StoredSession {
                            start: d.start,
                            end: d.end,
                            value,
                            key: k.clone(),
                        })
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::Range { lo, hi } => {
                let (lo, hi) = (sk(lo.0, lo.1, lo.2), sk(hi.0, hi.1, hi.2));
                let want: Vec<(Bytes, Bytes)> = model
                    .view()
                    .into_iter()
                    .filter(|(k, _)| *k >= lo && *k < hi)
                    .collect();
                prop_assert_eq!(store.range(&lo, &hi).expect("range"), want);
            }
            Op::ScanAll => {
                let want: Vec<(Bytes, Bytes)> = model.view().into_iter().collect();
                prop_assert_eq!(store.scan_all().expect("scan"), want);
            }
            Op::Flush => {
                let got = store.flush_with_old().expect("flush");
                let want = model.flush();
                if exact_flush {
                    prop_assert_eq!(&got, &want);
                }
                stream.extend(got);
            }
            Op::PutInner {
                key,
                start,
                len,
                value,
            } => {
                let k = sk(key, start, len);
                let v = Bytes::from(vec![value]);
                store.put_inner(k.clone(), v.clone()).expect("put_inner");
                model.put_inner(k, v);
            }
            Op::DeleteInner { key, start, len } => {
                let k = sk(key, start, len);
                store.delete_inner(&k).expect("delete_inner");
                model.delete_inner(&k);
            }
        }
        stream.extend(store.take_evicted());
    }
    Ok(stream)
}

fn inner_map<S: ByteKeyValueStore>(store: &CachingSessionStore<S>) -> BTreeMap<Bytes, Bytes> {
    store
        .inner()
        .scan_all()
        .expect("scan")
        .into_iter()
        .collect()
}

fn unbounded_cache_case<S: ByteKeyValueStore>(
    inner: S,
    ops: &[Op],
    retention: Option<i64>,
) -> Result<(), TestCaseError> {
    let budget = CacheBudget::new(usize::MAX);
    let mut store = match retention {
        Some(r) => {
            CachingSessionStore::with_retention("s", budget, inner, r).expect("valid retention")
        }
        None => CachingSessionStore::new("s", budget, inner),
    };
    let mut model = Model {
        retention,
        ..Model::default()
    };
    run(&mut store, &mut model, ops, true)?;
    let last = store.flush_with_old().expect("flush");
    prop_assert_eq!(last, model.flush());
    prop_assert_eq!(inner_map(&store), model.inner.clone());
    prop_assert_eq!(store.observed_end(), model.observed);
    prop_assert_eq!(store.inner().len(), model.inner.len());
    Ok(())
}

fn small_budget_case<S: ByteKeyValueStore>(
    inner: S,
    ops: &[Op],
    entries: usize,
) -> Result<(), TestCaseError> {
    let entry = crate::store::cache::CACHE_ENTRY_OVERHEAD + 20;
    let budget = CacheBudget::new(entries * entry);
    let mut store = CachingSessionStore::new("s", budget.clone(), inner);
    let mut model = Model::default();
    let mut stream = run(&mut store, &mut model, ops, false)?;
    stream.extend(store.flush_with_old().expect("flush"));
    model.flush();
    // Replaying the stream as a changelog reproduces the inner store, and each entry's
    // `old` is what the replica held: no write was lost, duplicated or reordered.
    let mut replica: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    for f in &stream {
        prop_assert_eq!(replica.get(&f.key).cloned(), f.old.clone());
        match &f.new {
            Some(v) => replica.insert(f.key.clone(), v.clone()),
            None => replica.remove(&f.key),
        };
    }
    prop_assert_eq!(&replica, &model.inner);
    prop_assert_eq!(inner_map(&store), model.inner.clone());
    prop_assert!(budget.used_bytes() <= budget.max_bytes());
    prop_assert_eq!(store.cache().dirty_len(), 0);
    Ok(())
}

fn persistent() -> crate::store::PersistentBytesStore {
    crate::store::PersistentBytesStore::temporary(&crate::store::PersistentOptions::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn unbounded_cache_matches_model_exactly(
        ops in proptest::collection::vec(op(true), 1..80),
        retention in proptest::option::of(0i64..30),
    ) {
        unbounded_cache_case(InMemoryBytesStore::new(), &ops, retention)?;
    }

    #[test]
    fn small_budget_never_loses_or_reorders_dirty_entries(
        ops in proptest::collection::vec(op(false), 1..120),
        entries in 0usize..6,
    ) {
        small_budget_case(InMemoryBytesStore::new(), &ops, entries)?;
    }
}

// The same properties over the persistent store (whose expiry runs on its own time index):
// fewer cases, as each opens a database on disk.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn persistent_unbounded_cache_matches_model_exactly(
        ops in proptest::collection::vec(op(true), 1..80),
        retention in proptest::option::of(0i64..30),
    ) {
        unbounded_cache_case(persistent(), &ops, retention)?;
    }

    #[test]
    fn persistent_small_budget_never_loses_or_reorders_dirty_entries(
        ops in proptest::collection::vec(op(false), 1..120),
        entries in 0usize..6,
    ) {
        small_budget_case(persistent(), &ops, entries)?;
    }
}
