//! Random record streams through the aggregate step against a naive re-implementation of
//! docs/DESIGN.md §4 (sessions in a `BTreeMap`, linear scans), with merges, late records,
//! out-of-order timestamps, skips, expiry and caches of every size.
//!
//! Which stored sessions a lookup sees follows Java's store (see `CachingSessionStore`):
//! a session is visible iff it is cached or its end is past the inner store's clock minus
//! retention. The model asks the store which sessions are cached and what the clock is
//! (both are checked against their own model in the store's tests) and decides the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::session::aggregate::Sum;
use crate::session::serde::{LongSerde, StringSerde};
use crate::session::store::SessionChange;
use crate::store::session_schema;
use crate::store::{CacheBudget, InMemoryBytesStore};

const KEYS: [&str; 3] = ["k", "kk", "k0"];

#[derive(Debug, Clone)]
enum Op {
    Record {
        key: Option<usize>,
        t: i64,
        value: i64,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (proptest::option::weighted(0.95, 0..KEYS.len()), -2i64..80, -3i64..10)
            .prop_map(|(key, t, value)| Op::Record { key, t, value }),
        1 => Just(Op::Flush),
    ]
}

type SessionKey = (String, i64, i64);

/// docs/DESIGN.md §4, written as plainly as possible. Sessions are keyed `(key, end, start)`.
struct Model {
    gap: i64,
    grace: i64,
    retention: i64,
    sessions: BTreeMap<SessionKey, i64>,
    stream_time: Option<i64>,
    metrics: AggregateMetrics,
}

type Store = SessionStore<String, i64, StringSerde, LongSerde>;

/// Java's visibility of a stored session: cached, or not yet expired in the inner store.
fn visible(store: &Store, retention: i64, (key, end, start): &SessionKey) -> bool {
    let raw = session_schema::session_key(key.as_bytes(), *start, *end);
    let cached = store
        .bytes()
        .cache()
        .peek(&raw)
        .is_some_and(|e| e.value.is_some());
    cached
        || store
            .bytes()
            .observed_end()
            .is_none_or(|c| *end > c - retention)
}

impl Model {
    fn process(
        &mut self,
        key: Option<&str>,
        t: i64,
        value: i64,
        visible: impl Fn(&SessionKey) -> bool,
    ) {
        let Some(key) = key else {
            self.metrics.skipped_null_key += 1;
            return;
        };
        if t < 0 {
            self.metrics.skipped_negative_ts += 1;
            return;
        }
        let st = self.stream_time.map_or(t, |s| s.max(t));
        self.stream_time = Some(st);
        let close = st - self.grace - self.gap;
        let found: Vec<SessionKey> = self
            .sessions
            .keys()
            .filter(|(k, end, start)| k == key && *end >= t - self.gap && *start <= t + self.gap)
            .filter(|s| visible(s))
            .cloned()
            .collect();
        let start = found.iter().map(|f| f.2).chain([t]).min().unwrap_or(t);
        let end = found.iter().map(|f| f.1).chain([t]).max().unwrap_or(t);
        if end < close {
            self.metrics.late_dropped += 1;
            return;
        }
        let mut agg: i64 = found.iter().map(|f| self.sessions[f]).sum();
        agg += value;
        for f in &found {
            self.sessions.remove(f);
        }
        self.sessions.insert((key.to_string(), end, start), agg);
        self.metrics.processed += 1;
    }

    fn visible_sessions(&self, visible: impl Fn(&SessionKey) -> bool) -> BTreeMap<SessionKey, i64> {
        self.sessions
            .iter()
            .filter(|(k, _)| visible(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

fn replay(replica: &mut BTreeMap<SessionKey, i64>, changes: Vec<SessionChange<String, i64>>) {
    for c in changes {
        let k = (c.key.key, c.key.end, c.key.start);
        match c.change.new {
            Some(v) => replica.insert(k, v),
            None => replica.remove(&k),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn aggregate_matches_the_naive_model(
        ops in proptest::collection::vec(op(), 1..150),
        gap in 0u64..12,
        grace in 0u64..12,
        extra_retention in proptest::option::of(0u64..20),
        budget in prop_oneof![Just(0usize), 100usize..1000, Just(usize::MAX)],
    ) {
        let retention = extra_retention.map(|e| Duration::from_millis(gap + grace + e));
        let windows = SessionWindows::new(
            Duration::from_millis(gap),
            Duration::from_millis(grace),
            retention,
        ).expect("windows");
        let mut store: Store =
            SessionStore::for_windows(
                "sums",
                CacheBudget::new(budget),
                InMemoryBytesStore::new(),
                &windows,
                StringSerde,
                LongSerde,
            ).expect("store");
        let mut step = SessionWindowAggregate::new(windows, Sum, Sum, Sum);
        let mut model = Model {
            gap: windows.gap_ms(),
            grace: windows.grace_ms(),
            retention: windows.retention_ms(),
            sessions: BTreeMap::new(),
            stream_time: None,
            metrics: AggregateMetrics::default(),
        };
        let mut replica = BTreeMap::new();
        for (offset, op) in ops.iter().enumerate() {
            match op {
                Op::Record { key, t, value } => {
                    let k = key.map(|i| KEYS[i].to_string());
                    let ctx = RecordContext::new("in", 0, offset as i64, *t);
                    let retention = model.retention;
                    model.process(key.map(|i| KEYS[i]), *t, *value, |s| {
                        visible(&store, retention, s)
                    });
                    step.process(&mut store, k.as_ref(), value, ctx).expect("process");
                }
                Op::Flush => replay(&mut replica, store.flush().expect("flush")),
            }
            replay(&mut replica, store.take_evicted().expect("evicted"));
        }
        prop_assert_eq!(step.metrics(), model.metrics);
        prop_assert_eq!(step.stream_time(), model.stream_time);

        let stored = |store: &Store| -> BTreeMap<SessionKey, i64> {
            let mut out = BTreeMap::new();
            for (k, v) in store.bytes().scan_all().expect("scan") {
                let d = session_schema::decode(&k).expect("session key");
                let key = String::from_utf8(d.key.to_vec()).expect("utf8 key");
                out.insert((key, d.end, d.start), LongSerde.deserialize(&v).expect("i64"));
            }
            out
        };
        // Before the last flush (dirty entries visible) and after it (the flush moves the
        // inner clock, so visibility is evaluated again).
        let actual = stored(&store);
        prop_assert_eq!(&actual, &model.visible_sessions(|s| visible(&store, model.retention, s)));
        if budget == usize::MAX {
            prop_assert_eq!(&actual, &model.sessions, "an unbounded cache hides nothing");
        }
        replay(&mut replica, store.flush().expect("flush"));
        let want = model.visible_sessions(|s| visible(&store, model.retention, s));
        prop_assert_eq!(&stored(&store), &want);
        replica.retain(|s, _| visible(&store, model.retention, s));
        prop_assert_eq!(&replica, &want, "the changelog stream rebuilds the visible sessions");
    }
}
