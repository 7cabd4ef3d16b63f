//! The scenarios of the Java equivalence suite: the settings both apps run with, the
//! hand-built gap, grace and cache-lifetime cases with their stated results, and which
//! records of a workload depend on when a cache is flushed (`flush_dependent`).

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) gap: i64,
    pub(super) grace: i64,
    /// `statestore.cache.max.bytes`; `None` = both defaults (10 MiB).
    pub(super) cache_max_bytes: Option<u64>,
    pub(super) commit_interval_ms: u64,
    /// `retention.ms` of the store; `None` = the default, gap + grace.
    pub(super) retention: Option<i64>,
    /// `processing.guarantee=exactly_once_v2` on both sides (outputs read committed).
    pub(super) eos: bool,
    /// Kafka Streams' `poll.ms`; `None` = its default (100). It also bounds the one poll in
    /// which Kafka Streams reads a changelog's last record to decide where a restore from
    /// scratch starts (a slower answer means a restore from the log start).
    pub(super) java_poll_ms: Option<u64>,
}

impl Settings {
    pub(super) fn retention(&self) -> i64 {
        self.retention.unwrap_or(self.gap + self.grace)
    }
}

/// The boundary scenarios: retention at its default (gap + grace = 15 s), the cache off so
/// every update is written through at once (Java's store clock, the largest session end
/// written, then equals stream time and the result does not depend on commit timing).
pub(super) const BOUNDARY: Settings = Settings {
    gap: 10_000,
    grace: 5_000,
    cache_max_bytes: Some(0),
    commit_interval_ms: 200,
    retention: None,
    eos: false,
    java_poll_ms: None,
};

pub(super) const GENERATED: Settings = Settings {
    gap: 10_000,
    grace: 20_000,
    cache_max_bytes: None,
    commit_interval_ms: 200,
    retention: None,
    eos: false,
    java_poll_ms: None,
};

pub(super) struct Scenario {
    pub(super) name: String,
    pub(super) settings: Settings,
    /// The input of each run; between runs both apps stop cleanly and their state is wiped.
    pub(super) runs: Vec<Vec<Click>>,
    /// The exact final sessions, (key, start, end) → count, where stated by hand.
    pub(super) expected: Option<BTreeMap<(String, i64, i64), i64>>,
}

/// One key's records (offsets in its block, in production order) and the sessions they
/// leave, (start, end, count).
pub(super) struct Case {
    pub(super) key: &'static str,
    pub(super) records: &'static [i64],
    pub(super) sessions: &'static [(i64, i64, i64)],
}

/// Gap 10 s: merging is inclusive (`end >= t - gap`, `start <= t + gap`).
pub(super) const GAP_CASES: &[Case] = &[
    // 10 000 apart twice: each finds the previous session at exactly `t - gap`.
    Case {
        key: "gap-exact",
        records: &[0, 10_000, 20_000],
        sessions: &[(0, 20_000, 3)],
    },
    // 10 001 apart: two sessions.
    Case {
        key: "gap-plus-one",
        records: &[0, 10_001],
        sessions: &[(0, 0, 1), (10_001, 10_001, 1)],
    },
    // Exactly a gap before a session's start (`start <= t + gap`), out of order.
    Case {
        key: "gap-exact-before",
        records: &[10_000, 0],
        sessions: &[(0, 10_000, 2)],
    },
    Case {
        key: "gap-plus-one-before",
        records: &[10_001, 0],
        sessions: &[(0, 0, 1), (10_001, 10_001, 1)],
    },
    // The third record is within the gap of both sessions: three into one (the two found
    // sessions are tombstoned).
    Case {
        key: "bridge",
        records: &[0, 10_001, 5_000],
        sessions: &[(0, 10_001, 3)],
    },
    // A bridge at exactly the gap on both sides, but at stream time 20 000 the session
    // [0,0] has passed retention (end 0 <= 20 000 - 15 000): the store no longer finds it,
    // so only [20000,20000] merges.
    Case {
        key: "bridge-expired",
        records: &[0, 20_000, 10_000],
        sessions: &[(0, 0, 1), (10_000, 20_000, 2)],
    },
    // Duplicate timestamps: one session, counted each time.
    Case {
        key: "duplicates",
        records: &[0, 0, 0, 5_000, 5_000],
        sessions: &[(0, 5_000, 5)],
    },
    // The merged window equals a found session ([0,8000]): updated, not tombstoned.
    Case {
        key: "merge-into-found",
        records: &[0, 8_000, 4_000],
        sessions: &[(0, 8_000, 3)],
    },
];

/// Gap 10 s, grace 5 s: after the first record of each case (100 000) stream time is
/// 100 000 and close is 100 000 - 5 000 - 10 000 = 85 000. A record is dropped when its
/// merged session ends before close; the store hides sessions with end <= 85 000.
pub(super) const GRACE_CASES: &[Case] = &[
    // A new session ending exactly at close: accepted (and emitted), though the store
    // already counts it as past retention.
    Case {
        key: "close-exact",
        records: &[100_000, 85_000],
        sessions: &[(85_000, 85_000, 1), (100_000, 100_000, 1)],
    },
    // Ending 1 ms before close: dropped.
    Case {
        key: "close-minus-one",
        records: &[100_000, 84_999],
        sessions: &[(100_000, 100_000, 1)],
    },
    // 84 999 is within the gap of [85000,85000], which would make a session ending at
    // close; but that session is past retention, not found, so 84 999 stays alone: late.
    Case {
        key: "close-then-join",
        records: &[100_000, 85_000, 84_999],
        sessions: &[(85_000, 85_000, 1), (100_000, 100_000, 1)],
    },
    // Out of order before close, joining a session that is still open ([86000,86000],
    // start exactly a gap later): the merged session ends at 86 000 >= close, accepted.
    Case {
        key: "extend-back",
        records: &[100_000, 86_000, 76_000],
        sessions: &[(76_000, 86_000, 2), (100_000, 100_000, 1)],
    },
    // One millisecond further back it finds nothing and is late on its own.
    Case {
        key: "extend-back-too-far",
        records: &[100_000, 86_000, 75_999],
        sessions: &[(86_000, 86_000, 1), (100_000, 100_000, 1)],
    },
    // Out of order within grace, merging two earlier sessions ([86000,86000] and
    // [97000,100000]) into one.
    Case {
        key: "merge-earlier",
        records: &[100_000, 86_000, 97_000, 90_000],
        sessions: &[(86_000, 100_000, 4)],
    },
    // Far behind: dropped, and it does not disturb the sessions around it.
    Case {
        key: "late-far",
        records: &[100_000, 50_000, 95_000],
        sessions: &[(95_000, 100_000, 2)],
    },
];

/// Gap 10 s, grace 0, so retention = gap: a session exactly a gap behind a new record is
/// found, and expired as soon as the merged end reaches the store. Kafka Streams removes
/// the found sessions before it puts the merged one, so each tombstone is written while
/// the store still shows its session (found by `JEQ_RANDOM_SEEDS`: seeds 8, 13, 17, 25).
pub(super) const GRACE_ZERO_CASES: &[Case] = &[
    // [0,0] is tombstoned: the last output record of [0,0] is the tombstone.
    Case {
        key: "gap-exact",
        records: &[0, 10_000],
        sessions: &[(0, 10_000, 2)],
    },
    Case {
        key: "gap-exact-chain",
        records: &[0, 10_000, 20_000, 30_000],
        sessions: &[(0, 30_000, 4)],
    },
    // Out of order, exactly at close (10 000 - 0 - 10 000): the found [10000,10000] is
    // live, merged into [0,10000].
    Case {
        key: "gap-exact-before",
        records: &[10_000, 0],
        sessions: &[(0, 10_000, 2)],
    },
];

pub(super) fn hand_built(
    name: &'static str,
    settings: Settings,
    cases: &[Case],
    base: i64,
) -> Scenario {
    let mut clicks = Vec::new();
    let mut expected = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let block = base + i as i64 * BLOCK;
        for t in case.records {
            clicks.push(Click {
                key: case.key.to_string(),
                timestamp: block + t,
            });
        }
        for (s, e, c) in case.sessions {
            expected.insert((case.key.to_string(), block + s, block + e), *c);
        }
    }
    Scenario {
        name: name.to_string(),
        settings,
        runs: vec![clicks],
        expected: Some(expected),
    }
}

/// Drops the records whose result depends on when Kafka Streams flushes its cache, so the
/// ground truth is deterministic: a record whose lookup window `[t - gap, t + gap]` reaches
/// sessions that may be past retention (`t - gap <= stream time - retention`) while an
/// earlier record of its key lies in that window. Kafka Streams' caching layer finds such
/// a session as long as it is cached, dirty or clean (`CachingSessionStore` merges cached
/// entries without a retention check, and a flush only marks entries clean), so the record
/// merges with it; but the tombstone for the merged-away session is written only if the
/// RocksDB store underneath still shows it when the tombstone is flushed (it hides
/// `end < observed - retention + 1`, `observed` being the largest end written through so
/// far), which depends on what earlier commits wrote through. The records left that are
/// that far behind find nothing and are dropped as late in every run. Over several runs
/// (restarts) pass them concatenated: the stream time here never goes back, an upper bound
/// of the store clock after a restore.
pub(super) fn flush_independent(
    clicks: Vec<Click>,
    gap: i64,
    retention: i64,
) -> (Vec<Click>, usize) {
    let drop = flush_dependent(&clicks, gap, retention);
    let dropped = drop.iter().filter(|d| **d).count();
    let kept = clicks
        .into_iter()
        .zip(drop)
        .filter_map(|(c, d)| (!d).then_some(c))
        .collect();
    (kept, dropped)
}

/// For each record, whether [`flush_independent`] leaves it out.
pub(super) fn flush_dependent(clicks: &[Click], gap: i64, retention: i64) -> Vec<bool> {
    let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    clicks
        .iter()
        .map(|c| {
            let t = c.timestamp;
            let st = stream_time
                .entry(partition_of(c.key.as_bytes(), INPUT_PARTITIONS))
                .or_insert(t);
            *st = (*st).max(t);
            let earlier = seen.entry(&c.key).or_default();
            if t - gap <= *st - retention && earlier.iter().any(|e| (t - gap..=t + gap).contains(e))
            {
                return true;
            }
            earlier.push(t);
            false
        })
        .collect()
}

/// Where the record cache shows: gap 10 s, grace 5 s (retention 15 s), the cache on, every
/// record of a run in the log before the app starts, so a run's records land in one cache
/// lifetime (the first poll gets them all; the first commit comes after).
///
/// `merged-after-flush`: a session emitted and written through, then merged away after
/// stream time moved past its retention; the tombstone must still reach the output and the
/// changelog. Run 1 emits `[0,0]=1` (written through when the app stops). Run 2 restores
/// it; 10 000 merges `[0,0]` into `[0,10000]` (staging a tombstone for `[0,0]`), 20 000
/// merges that into `[0,20000]`. Kafka Streams flushes in dirty order and advances its
/// store's clock only as entries are written through, so when the `[0,0]` tombstone is
/// flushed the store still holds `[0,0]` (clock 0): the tombstone is written. Output:
/// `[0,0]=1`, `[0,0]=tombstone`, `[0,20000]=3`.
///
/// `found-in-cache` (run 2, a block later): 80 000, then 100 000 (stream time 100 000,
/// close 85 000, and `[80000,80000]` is past retention), then 88 000: Kafka Streams'
/// caching layer still finds the cached `[80000,80000]` (it merges cached entries, dirty
/// or clean, without a retention check; only the store underneath hides expired
/// sessions), so 88 000 merges into `[80000,88000]=2`, which ends after close: on time.
pub(super) fn cache_lifetime(base: i64) -> Scenario {
    let click = |key: &str, t: i64| Click {
        key: key.to_string(),
        timestamp: base + t,
    };
    let (m, c) = ("merged-after-flush", "found-in-cache");
    Scenario {
        name: "cache-lifetime".into(),
        settings: Settings {
            cache_max_bytes: None,
            ..BOUNDARY
        },
        runs: vec![
            vec![click(m, 0)],
            vec![
                click(m, 10_000),
                click(m, 20_000),
                click(c, BLOCK + 80_000),
                click(c, BLOCK + 100_000),
                click(c, BLOCK + 88_000),
            ],
        ],
        expected: Some(BTreeMap::from([
            ((m.to_string(), base, base + 20_000), 3),
            (
                (c.to_string(), base + BLOCK + 80_000, base + BLOCK + 88_000),
                2,
            ),
            (
                (
                    c.to_string(),
                    base + BLOCK + 100_000,
                    base + BLOCK + 100_000,
                ),
                1,
            ),
        ])),
    }
}
