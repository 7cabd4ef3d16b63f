//! Random record streams through the aggregate step against a naive re-implementation of
//! DESIGN §4 (sessions in a `BTreeMap`, linear scans), with merges, late records,
//! out-of-order timestamps, skips, expiry and caches of every size.

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

/// DESIGN §4, written as plainly as possible. Sessions are keyed `(key, end, start)`.
struct Model {
    gap: i64,
    grace: i64,
    retention: i64,
    sessions: BTreeMap<SessionKey, i64>,
    stream_time: Option<i64>,
    store_clock: Option<i64>,
    metrics: AggregateMetrics,
}

impl Model {
    fn live(&self, end: i64) -> bool {
        self.store_clock.is_none_or(|c| end > c - self.retention)
    }

    fn process(&mut self, key: Option<&str>, t: i64, value: i64) {
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
            .filter(|(k, end, start)| {
                k == key && *end >= t - self.gap && *start <= t + self.gap && self.live(*end)
            })
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
        self.store_clock = self.store_clock.max(Some(end));
        self.metrics.processed += 1;
    }

    fn live_sessions(&self) -> BTreeMap<SessionKey, i64> {
        self.sessions
            .iter()
            .filter(|((_, end, _), _)| self.live(*end))
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
        let mut store: SessionStore<String, i64, StringSerde, LongSerde> =
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
            store_clock: None,
            metrics: AggregateMetrics::default(),
        };
        let mut replica = BTreeMap::new();
        for (offset, op) in ops.iter().enumerate() {
            match op {
                Op::Record { key, t, value } => {
                    let k = key.map(|i| KEYS[i].to_string());
                    let ctx = RecordContext::new("in", 0, offset as i64, *t);
                    step.process(&mut store, k.as_ref(), value, ctx).expect("process");
                    model.process(key.map(|i| KEYS[i]), *t, *value);
                }
                Op::Flush => replay(&mut replica, store.flush().expect("flush")),
            }
            replay(&mut replica, store.take_evicted().expect("evicted"));
        }
        prop_assert_eq!(step.metrics(), model.metrics);
        prop_assert_eq!(step.stream_time(), model.stream_time);

        let mut actual = BTreeMap::new();
        for (k, v) in store.bytes().scan_all().expect("scan") {
            let d = session_schema::decode(&k).expect("session key");
            let key = String::from_utf8(d.key.to_vec()).expect("utf8 key");
            actual.insert((key, d.end, d.start), LongSerde.deserialize(&v).expect("i64"));
        }
        let want = model.live_sessions();
        prop_assert_eq!(&actual, &want);

        replay(&mut replica, store.flush().expect("flush"));
        replica.retain(|(_, end, _), _| model.live(*end));
        prop_assert_eq!(&replica, &want, "the changelog stream rebuilds the live sessions");
    }
}
