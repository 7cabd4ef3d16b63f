//! The bench's output check: two engines' outputs compared as compacted views on what does
//! not depend on when a cache is flushed.
//!
//! With the cache on, a record that reaches back to sessions that may already be past
//! retention (`t - gap <= stream time - retention`) while an earlier record of its key lies
//! in its lookup window `[t - gap, t + gap]` merges with that session if it is still cached
//! and finds nothing if it was flushed and expired below the cache; which of the two happens
//! depends on wall-clock commits and eviction order, in Kafka Streams as in kstate (the rule
//! and its reasoning are `flush_dependent` in `tests/java_equivalence.rs`, which drops such
//! records from its inputs). The bench keeps its input whole, so instead the comparison
//! leaves out the sessions such a record can reach: per key, the region `[t - gap, t + gap]`
//! around each flush-dependent record, grown to a fixpoint by every session of either output
//! that lies within a gap of the region (a record merging with a differing session differs
//! too). Every other session must be equal, key, window and count.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::worker::{partition_of, Click};

/// A session: `(key, start, end)`.
pub type Session = (String, i64, i64);

/// A compacted view: session -> count.
pub type View = BTreeMap<Session, i64>;

/// What [`compare`] found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Records of the input whose result depends on flush timing.
    pub flush_dependent_records: usize,
    /// Sessions (of either view) left out as within reach of such a record.
    pub excluded_sessions: usize,
    /// Sessions compared (the union of both views' sessions outside the regions).
    pub compared_sessions: usize,
    /// Compared sessions missing from one view or with a different count.
    pub differing: Vec<(Session, Option<i64>, Option<i64>)>,
    /// Sessions that differ in all, timing-dependent ones included (for information).
    pub differing_all: usize,
}

/// Times of the flush-dependent records per key: `clicks` in production order, stream time
/// per input partition (the rule of `tests/java_equivalence.rs`).
pub fn flush_dependent(
    clicks: &[Click],
    partitions: i32,
    gap: i64,
    retention: i64,
) -> BTreeMap<&str, Vec<i64>> {
    let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut dependent: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for c in clicks {
        let t = c.timestamp;
        let st = stream_time
            .entry(partition_of(c.key.as_bytes(), partitions))
            .or_insert(t);
        *st = (*st).max(t);
        let earlier = seen.entry(&c.key).or_default();
        if t - gap <= *st - retention && earlier.iter().any(|e| (t - gap..=t + gap).contains(e)) {
            dependent.entry(&c.key).or_default().push(t);
        }
        earlier.push(t);
    }
    dependent
}

/// Sessions of one key within reach of `seeds` (times of flush-dependent records), given the
/// sessions `(start, end)` of both views.
fn reachable(seeds: &[i64], sessions: &BTreeSet<(i64, i64)>, gap: i64) -> BTreeSet<(i64, i64)> {
    let mut region: Vec<(i64, i64)> = seeds.iter().map(|t| (t - gap, t + gap)).collect();
    let mut reached = BTreeSet::new();
    loop {
        let before = reached.len();
        for &(s, e) in sessions {
            if reached.contains(&(s, e)) {
                continue;
            }
            let (lo, hi) = (s - gap, e + gap);
            if region.iter().any(|&(a, b)| lo <= b && a <= hi) {
                reached.insert((s, e));
                region.push((lo, hi));
            }
        }
        if reached.len() == before {
            return reached;
        }
    }
}

/// Compares `a` and `b` outside the sessions a flush-dependent record of `clicks` can reach.
pub fn compare(
    a: &View,
    b: &View,
    clicks: &[Click],
    partitions: i32,
    gap: i64,
    retention: i64,
) -> Comparison {
    let dependent = flush_dependent(clicks, partitions, gap, retention);
    let mut by_key: BTreeMap<&str, BTreeSet<(i64, i64)>> = BTreeMap::new();
    for (k, s, e) in a.keys().chain(b.keys()) {
        by_key.entry(k.as_str()).or_default().insert((*s, *e));
    }
    let mut out = Comparison {
        flush_dependent_records: dependent.values().map(Vec::len).sum(),
        ..Comparison::default()
    };
    for (key, sessions) in &by_key {
        let excluded = dependent
            .get(key)
            .map_or_else(BTreeSet::new, |seeds| reachable(seeds, sessions, gap));
        for &(s, e) in sessions {
            let k = (key.to_string(), s, e);
            let (va, vb) = (a.get(&k).copied(), b.get(&k).copied());
            if va != vb {
                out.differing_all += 1;
            }
            if excluded.contains(&(s, e)) {
                out.excluded_sessions += 1;
                continue;
            }
            out.compared_sessions += 1;
            if va != vb {
                out.differing.push((k, va, vb));
            }
        }
    }
    out
}
